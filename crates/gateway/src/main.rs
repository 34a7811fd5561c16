//! The `gateway` binary: command-line parsing only; everything else is in the library
//! ([`gateway::Gateway`] for `serve`, [`gateway::cli`] for the other commands).

// No `unwrap`/`expect` outside tests: what comes from the network, a file or the
// config fails with a typed error instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gateway::cli::{self, ReportFormat};

/// A multi-tenant FastCGI gateway: one HTTP front server for many tenants of one PHP
/// codebase, in front of a shared PHP-FPM pool.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        #[command(flatten)]
        file: ConfigFile,
        /// Take the listening sockets over from the gateway running with this config
        /// (through its `[server] takeover_socket`); it drains and exits once this one
        /// serves.
        #[arg(long)]
        takeover: bool,
    },
    /// Validates a config and prints what it would serve.
    Check {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Lists, shows and edits tenants in the config file. Edits keep the file's
    /// comments, refuse anything the gateway would reject, and replace the file
    /// atomically, so a running gateway reloads the result. With `[registry] postgres`
    /// they read and write the fleet's registry in PostgreSQL instead.
    Tenants {
        #[command(subcommand)]
        action: TenantsCommand,
    },
    /// Acts on the running gateway's response cache, through its admin API.
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// The fleet's tenant registry in PostgreSQL (`[registry] postgres`).
    Registry {
        #[command(subcommand)]
        action: RegistryCommand,
    },
    /// Prints per-tenant usage from the metering database named in the config (in a
    /// fleet, `[usage] postgres`: every gateway's totals from the shared ledger).
    Usage {
        #[command(flatten)]
        file: ConfigFile,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only hours from this one on: YYYY-MM-DD (midnight UTC) or RFC 3339.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Drops a tenant's cached answers: the URLs, prefix and tags given, or all of them
    /// when none is given. Never another tenant's.
    Purge {
        /// The tenant.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        /// A URL: `/path?query` on any of the tenant's hosts, or `https://host/path`.
        #[arg(long = "url", value_name = "URL")]
        urls: Vec<String>,
        /// Every URL whose path starts with this (`/blog/`).
        #[arg(long)]
        prefix: Option<String>,
        /// A tag PHP sent in `Cache-Tag` or `Surrogate-Key`.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
}

/// `--config` of every command. Not a global arg: clap cannot require a global one.
#[derive(Debug, Args)]
struct ConfigFile {
    /// The tenants.toml file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Lists every tenant with its state and hosts.
    List {
        #[command(flatten)]
        file: ConfigFile,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Shows one tenant's settings; secret param values are masked.
    Show {
        /// The tenant.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Adds a tenant.
    Add {
        /// The new tenant's name: 1-63 characters from a-z, 0-9, '_' and '-'.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        /// A host it serves (`a.example.org`, or `*.a.example.org`); repeatable.
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
        /// A FastCGI param for its requests; repeatable.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Add it suspended: its hosts answer 503 until `tenants resume`.
        #[arg(long)]
        disabled: bool,
        /// Cap on its share of the PHP-FPM pool.
        #[arg(long, value_name = "N")]
        max_concurrency: Option<usize>,
        /// The `[upstreams.NAME]` its PHP runs on (default: `[defaults]`'s, else
        /// `[fastcgi]`).
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        /// Where its private files are, for `X-Accel-Redirect`/`X-Sendfile` (`{tenant}`
        /// stands for its name).
        #[arg(long, value_name = "DIR")]
        private_root: Option<String>,
    },
    /// Removes a tenant.
    Remove {
        /// The tenant.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        version: IfMatch,
    },
    /// Suspends a tenant: its hosts answer 503 with the suspended page.
    Suspend {
        /// The tenant.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        version: IfMatch,
    },
    /// Resumes a suspended tenant.
    Resume {
        /// The tenant.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        version: IfMatch,
    },
}

/// `--if-match` of the tenant edits in a fleet.
#[derive(Debug, Args)]
struct IfMatch {
    /// In a fleet: only if the tenant is still at this registry version (the `version:`
    /// `tenants show` printed); else the change fails and nothing is written. Without
    /// it, the version read just before the write.
    #[arg(long = "if-match", value_name = "VERSION")]
    if_match: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Creates or upgrades the fleet's tables in PostgreSQL.
    Migrate {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Writes the `[tenants.NAME]` tables of a file to the registry, in one transaction.
    Import {
        /// The file whose tenants to import (a single machine's tenants.toml).
        tenants: PathBuf,
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Prints the registry's tenants as `[tenants.NAME]` tables (secrets in clear).
    Export {
        #[command(flatten)]
        file: ConfigFile,
    },
}

/// Output of `tenants list` and `tenants show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    /// Aligned columns, for people.
    Table,
    /// JSON, for scripts.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gateway::logging::init(matches!(cli.log_format, LogFormat::Json));
    match cli.command {
        Command::Serve { file, takeover } => serve(file.config, takeover),
        Command::Check { file } => print(cli::check(&file.config)),
        Command::Tenants { action } => print(tenants(action)),
        Command::Cache {
            action:
                CacheCommand::Purge {
                    name,
                    file,
                    urls,
                    prefix,
                    tags,
                },
        } => print(cli::cache_purge(
            &file.config,
            &name,
            &gateway::cache::Purge { urls, prefix, tags },
        )),
        Command::Registry { action } => print(match action {
            RegistryCommand::Migrate { file } => cli::registry_migrate(&file.config),
            RegistryCommand::Import { tenants, file } => {
                cli::registry_import(&file.config, &tenants)
            }
            RegistryCommand::Export { file } => cli::registry_export(&file.config),
        }),
        Command::Usage {
            file,
            tenant,
            since,
            format,
        } => print(cli::usage_report(
            &file.config,
            tenant.as_deref(),
            since.as_deref(),
            format,
        )),
    }
}

fn tenants(action: TenantsCommand) -> Result<String, cli::CliError> {
    let json = |format| format == ListFormat::Json;
    match action {
        TenantsCommand::List { file, format } => cli::tenants_list(&file.config, json(format)),
        TenantsCommand::Show { name, file, format } => {
            cli::tenants_show(&file.config, &name, json(format))
        }
        TenantsCommand::Add {
            name,
            file,
            hosts,
            params,
            disabled,
            max_concurrency,
            upstream,
            private_root,
        } => cli::tenants_add(
            &file.config,
            &name,
            hosts,
            cli::parse_param_args(&params)?,
            !disabled,
            max_concurrency,
            cli::Placement {
                upstream,
                private_root,
            },
        ),
        TenantsCommand::Remove {
            name,
            file,
            version,
        } => cli::tenants_remove(&file.config, &name, version.if_match),
        TenantsCommand::Suspend {
            name,
            file,
            version,
        } => cli::tenants_suspend(&file.config, &name, version.if_match),
        TenantsCommand::Resume {
            name,
            file,
            version,
        } => cli::tenants_resume(&file.config, &name, version.if_match),
    }
}

/// The one place a command's result becomes output and an exit status.
fn print<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, takeover: bool) -> ExitCode {
    // Loaded before the runtime exists, which it sizes.
    let config = match gateway::config::Config::load(&path) {
        Ok(config) => config,
        Err(err) => return stopped(&err),
    };
    // Before any thread starts: socket activation edits the environment.
    let (inherited, handover) = match inherit_listeners(&config, takeover) {
        Ok(inherited) => inherited,
        Err(err) => return stopped(&err),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Default: one worker thread per core (or `TOKIO_WORKER_THREADS`), no more.
    if let Some(threads) = config.server.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let gateway = gateway::Gateway::bind_with(config, inherited, handover).await?;
        gateway.serve(gateway::shutdown_signal()).await;
        Ok::<(), gateway::RunError>(())
    });
    // Access lines are written in batches: the last ones go out before the process does.
    gateway::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => stopped(&err),
    }
}

/// The listening sockets this process starts with: from the running gateway with
/// `--takeover`, else from systemd when it passed any.
fn inherit_listeners(
    config: &gateway::config::Config,
    takeover: bool,
) -> Result<
    (
        gateway::systemd::InheritedListeners,
        Option<gateway::takeover::Handover>,
    ),
    gateway::RunError,
> {
    let from_systemd = gateway::systemd::InheritedListeners::from_env()?;
    if !takeover {
        return Ok((from_systemd, None));
    }
    let path = config
        .server
        .takeover_socket
        .as_deref()
        .ok_or(gateway::RunError::NoTakeoverSocket)?;
    let (handover, fds) = gateway::takeover::Handover::connect(path)?;
    from_systemd.warn_unclaimed();
    Ok((
        gateway::systemd::InheritedListeners::from_fds(fds),
        Some(handover),
    ))
}

/// Reports why the gateway could not run (or stopped) and fails.
fn stopped(err: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %err, "gateway stopped");
    eprintln!("error: {err}");
    ExitCode::FAILURE
}
