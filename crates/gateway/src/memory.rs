//! Handing freed heap memory back to the operating system: after the large, short-lived
//! allocations of a config load or reload, and in the background after a burst of
//! connections, the way Go's runtime scavenger or jemalloc's decay do.
//!
//! glibc's allocator keeps freed memory mapped for reuse and on its own only returns the
//! top of each heap. Parsing a 10,000-tenant config leaves tens of MiB of free pages
//! scattered between the allocations the snapshot keeps, and 1,000 client connections
//! leave their buffers' pages behind after they close. `malloc_trim` releases every whole
//! free page (`madvise(MADV_DONTNEED)`), so the RSS follows the memory actually in use.
//! It never runs on a request's path.

use std::future::Future;
use std::time::{Duration, Instant};

/// The shortest pause between two background trims.
const MIN_SCAVENGE_PERIOD: Duration = Duration::from_secs(2);

/// The background trim may take at most 1/`SCAVENGE_DUTY` of one core.
const SCAVENGE_DUTY: u32 = 100;

/// Whether [`release_free_memory`] does anything on this platform.
pub const CAN_RELEASE: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Returns the allocator's free pages to the operating system (glibc on Linux; a no-op
/// elsewhere). Takes up to a few milliseconds on a large heap: call it from a blocking
/// thread or at startup, never while serving a request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes no pointers and is thread-safe; it only walks the
        // allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Releases free memory every few seconds until `stop` completes, on a blocking thread.
/// The pause grows with the time a trim takes, so the scavenger stays under 1% of a core
/// however large the heap is.
pub async fn run_scavenger(stop: impl Future<Output = ()>) {
    if !CAN_RELEASE {
        return;
    }
    let mut stop = std::pin::pin!(stop);
    let mut period = MIN_SCAVENGE_PERIOD;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(period) => {}
        }
        let trim = tokio::task::spawn_blocking(|| {
            let started = Instant::now();
            release_free_memory();
            started.elapsed()
        });
        match trim.await {
            Ok(took) => {
                period = MIN_SCAVENGE_PERIOD.max(took * SCAVENGE_DUTY);
                tracing::trace!(?took, ?period, "released free memory");
            }
            // The runtime is shutting down.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_scavenger_stops_when_asked() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let scavenger = tokio::spawn(run_scavenger(async {
            let _ = rx.await;
        }));
        tokio::time::sleep(MIN_SCAVENGE_PERIOD * 3).await;
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(1), scavenger)
            .await
            .expect("the scavenger stopped")
            .expect("the scavenger did not panic");
    }

    #[test]
    fn releasing_memory_keeps_live_allocations_intact() {
        let kept: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
        let freed: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
        drop(freed);
        release_free_memory();
        for (i, block) in kept.iter().enumerate() {
            assert!(block.iter().all(|&b| usize::from(b) == i));
        }
    }
}
