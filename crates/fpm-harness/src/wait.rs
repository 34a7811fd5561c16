//! Waiting in async tests for a condition that becomes true in the background.

use std::time::Duration;

/// Polls `check` every 10 ms until it holds (true) or `limit` passes (false).
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
