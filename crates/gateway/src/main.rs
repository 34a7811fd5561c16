//! The `gateway` binary: command-line parsing only; everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
        /// The tenants.toml file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validates a config and prints what it would serve.
    Check {
        /// The tenants.toml file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gateway::logging::init(matches!(cli.log_format, LogFormat::Json));
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => match gateway::cli::check(&config) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: PathBuf) -> ExitCode {
    // Two cores is the common case for this server: one worker thread per core, no more.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(&config, gateway::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "gateway stopped");
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
