//! Dropping a response body stops the PHP script behind it: the connection is closed,
//! the script's next output fails, and its worker is free again.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fcgi_core::{ClientConfig, Connection};
use fpm_harness::FpmConfig;
use http::StatusCode;
use http_body_util::BodyExt;

use common::{fpm_status_request, get, start_fpm, text, upstream, within, REQUEST_LIMIT};

/// The script's last heartbeat, as Unix seconds (stream.php writes it before each line).
fn marker(path: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// "active processes" of the FPM status page, asked through fcgi-core itself on a
/// connection of its own (which is the one active process when all else is idle).
async fn active_processes(fpm: &fpm_harness::Fpm) -> u64 {
    let conn = within(
        REQUEST_LIMIT,
        "connect",
        Connection::connect(&upstream(fpm.address()), ClientConfig::default()),
    )
    .await
    .expect("connects");
    let response = within(
        REQUEST_LIMIT,
        "status page",
        conn.send(fpm_status_request()),
    )
    .await
    .expect("status page answers");
    let (status, body) = within(REQUEST_LIMIT, "status body", text(response))
        .await
        .expect("status body");
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("status page JSON");
    json["active processes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no active processes in {json}"))
}

/// [`active_processes`], asked again for up to 2 s until it is `want`: PHP-FPM's
/// scoreboard can lag a loaded machine by a moment.
async fn active_processes_settled_at(fpm: &fpm_harness::Fpm, want: u64) -> u64 {
    let mut active = 0;
    for _ in 0..20 {
        active = active_processes(fpm).await;
        if active == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    active
}

#[tokio::test]
async fn a_dropped_body_stops_the_script_and_frees_its_worker() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let marker_path = fpm.dir().join("stream.marker");
    let pool = common::pool(fpm.address(), |_| {});
    let query = format!("seconds=30&marker={}", marker_path.display());

    let response = within(
        REQUEST_LIMIT,
        "stream.php head",
        pool.send(get("stream.php", &query)),
    )
    .await
    .expect("stream.php answers");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    while seen.matches('\n').count() < 5 {
        let frame = within(REQUEST_LIMIT, "a stream.php line", body.frame())
            .await
            .expect("the stream goes on")
            .expect("body frame");
        if let Ok(chunk) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.starts_with("line 0\nline 1\n"), "{seen:?}");
    assert!(
        marker(&marker_path).is_some(),
        "the script writes its marker"
    );
    let active = active_processes_settled_at(&fpm, 2).await;
    assert_eq!(active, 2, "stream.php and the status request");

    drop(body);
    let dropped_at = unix_now();
    assert_eq!(
        pool.stats().open,
        0,
        "the aborted connection is closed, not pooled"
    );

    // The script must stop within ~1 s: its last heartbeat is no later than that, and
    // it stays put afterwards.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = marker(&marker_path).expect("marker readable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = marker(&marker_path).expect("marker readable");
    assert_eq!(settled, later, "the script is still running");
    assert!(
        settled - dropped_at < 1.0,
        "the script ran {:.3} s after the drop",
        settled - dropped_at
    );

    // Its worker is idle again: only the status request itself is active.
    let active = active_processes_settled_at(&fpm, 1).await;
    assert_eq!(active, 1, "the aborted worker is still busy");
}
