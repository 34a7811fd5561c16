//! What a fleet gateway's full registry re-read costs at 10,000 tenants (each with one or
//! two hosts and six params) in a private PostgreSQL: the listener's read after a
//! (re)connect ([`registry::read_full`]: version and rows in one repeatable-read
//! transaction, each spec parsed), then what putting it in service does
//! ([`Reloader::apply_registry`](gateway::reload::Reloader::apply_registry)): validation
//! with the config file's other settings (`Config::load_with_tenants`) and
//! `Snapshot::build`. Target: under 200 ms in all.
//!
//! Between runs one tenant is changed (untimed), so each build is a real one (an
//! unchanged registry is not rebuilt). Prints the median and p95 of each phase and of
//! the whole over [`RUNS`] runs, wall time. Skipped, with a message, where PostgreSQL is
//! not installed (`scripts/ensure-php-fpm.sh --with-postgres`).
//!
//! Run: `cargo bench -p gateway --bench registry_pg`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fpm_harness::Postgres;
use gateway::config::Config;
use gateway::fleet::{connect, registry, schema, Store};
use gateway::snapshot::Snapshot;

/// Tenants in the registry.
const TENANTS: usize = 10_000;

/// Timed runs (after one warm-up).
const RUNS: usize = 10;

/// The target for the whole re-read, validation and build.
const TARGET: Duration = Duration::from_millis(200);

/// Tenant `i` as the admin API would store it: an exact host, every other tenant a
/// wildcard too, and six params of realistic lengths.
fn spec(i: usize, marker: &str) -> (serde_json::Value, Vec<String>) {
    let mut hosts = vec![format!("centro{i}.example.org")];
    if i % 2 == 0 {
        hosts.push(format!("*.centro{i}.example.org"));
    }
    let spec = serde_json::json!({
        "hosts": hosts,
        "params": {
            "DBHOST": format!("10.200.{}.{}", i / 250, i % 250),
            "DBNAME": format!("moodle_centro{i}"),
            "DBUSER": "moodle",
            "DBPASS": format!("s3cret-{i:08x}"),
            "WWWROOT": format!("https://centro{i}.example.org"),
            "DATAROOT": format!("/moodledata/centro{i}{marker}"),
        },
    });
    (spec, hosts)
}

/// A fleet gateway's config file: no `[tenants]`, the registry in `conn`.
fn write_config(dir: &Path, conn: &str) -> std::path::PathBuf {
    let root = dir.join("app");
    std::fs::create_dir_all(&root).expect("app root");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n\
         [fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = {}\n\n\
         [defaults.params]\nAPP_ENV = \"production\"\n\n\
         [registry]\npostgres = {}\n",
        toml::Value::from(root.display().to_string()),
        toml::Value::from(conn),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// CPU time of this process, all threads (the tokio-postgres connection task included;
/// PostgreSQL's own time is not): unlike wall time, not inflated by other processes
/// competing for the cores.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if let Err(err) = fpm_harness::postgres_bin_dir() {
        eprintln!("SKIPPED registry_pg: {err}");
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(quick));
}

async fn run(quick: bool) {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start task")
        .expect("PostgreSQL starts");
    let conn = pg.conn_string();
    let (mut client, _notes) = connect(&conn).await.expect("connect");
    schema::migrate(&mut client).await.expect("migrate");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &conn);

    let tenants = if quick { 200 } else { TENANTS };
    let rows: BTreeMap<String, (serde_json::Value, Vec<String>)> = (0..tenants)
        .map(|i| (format!("centro{i:05}"), spec(i, "")))
        .collect();
    let store = Store::new(&conn).expect("pool");
    let t0 = Instant::now();
    store.import(&rows).await.expect("import");
    eprintln!(
        "imported {tenants} tenants ({} hosts) in {:.0} ms",
        rows.values().map(|(_, h)| h.len()).sum::<usize>(),
        ms(t0.elapsed())
    );

    let view = registry::read_full(&mut client).await.expect("read");
    let config = Config::load_with_tenants(&path, &view.tenant_settings()).expect("valid");
    let mut previous = Snapshot::build(config, None).expect("snapshot");

    let runs = if quick { 2 } else { RUNS };
    let (mut read, mut validate, mut build, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut query, mut cpu) = (vec![], vec![]);
    for run in 0..=runs {
        // A change, so the build is a real one.
        let (spec, hosts) = spec(run % tenants, &format!("-r{run}"));
        store
            .put(
                &format!("centro{:05}", run % tenants),
                &spec,
                &hosts,
                None,
                false,
            )
            .await
            .expect("change a tenant");

        let start = Instant::now();
        let cpu_start = process_cpu_time();
        let view = registry::read_full(&mut client).await.expect("read");
        let read_at = start.elapsed();
        let settings = view.tenant_settings();
        let config = tokio::task::block_in_place(|| Config::load_with_tenants(&path, &settings))
            .expect("valid");
        assert!(*previous.config != config, "a re-read that changes nothing");
        let validated_at = start.elapsed();
        let snapshot = tokio::task::block_in_place(|| Snapshot::build(config, Some(&previous)))
            .expect("snapshot");
        let built_at = start.elapsed();
        let cpu_used = process_cpu_time().saturating_sub(cpu_start);
        assert_eq!(snapshot.config.tenants.len(), tenants);
        previous = snapshot;
        // Untimed above: the query alone (PostgreSQL and the wire, no parsing).
        let t = Instant::now();
        let rows = client
            .query(
                "SELECT name, spec::text, version FROM tenants WHERE NOT deleted",
                &[],
            )
            .await
            .expect("query");
        assert_eq!(rows.len(), tenants);
        let query_took = t.elapsed();
        if run == 0 {
            continue; // warm-up
        }
        query.push(query_took);
        cpu.push(cpu_used);
        read.push(read_at);
        validate.push(validated_at - read_at);
        build.push(built_at - validated_at);
        total.push(built_at);
    }
    println!("registry full re-read at {tenants} tenants, {runs} runs (wall time, ms):");
    for (name, times) in [
        ("read_full (PostgreSQL → RegistryView)", &mut read),
        ("validation (Config::load_with_tenants)", &mut validate),
        ("Snapshot::build", &mut build),
        ("total", &mut total),
        ("  of read_full: the query alone", &mut query),
        ("  total CPU time of this process", &mut cpu),
    ] {
        times.sort();
        println!(
            "  {name:<42} median {:7.1}  p95 {:7.1}",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.95))
        );
    }
    let p95 = percentile(&total, 0.95);
    if !quick {
        println!(
            "  target {} ms: {}",
            TARGET.as_millis(),
            if p95 <= TARGET {
                "met (p95)"
            } else {
                "MISSED (p95)"
            }
        );
    }
}
