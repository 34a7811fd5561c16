//! The pool's logic on `i32` values, without sockets: a negative value is "dirty" (not
//! fit for reuse). Time is tokio's paused clock where the reaper or a timeout is involved.

use std::time::Duration;

use futures_util::FutureExt;

use super::*;

impl Poolable for i32 {
    fn is_clean(&self) -> bool {
        *self >= 0
    }
}

/// Polls once: whether the future is still waiting.
fn pending<F: std::future::Future + Unpin>(future: &mut F) -> bool {
    future.now_or_never().is_none()
}

fn settings() -> Settings {
    Settings {
        idle_timeout: Duration::from_secs(10),
        queue_timeout: Duration::from_secs(5),
        max_queue: 16,
        mark_on_fault: true,
    }
}

fn one_server(max: usize) -> Pool<i32> {
    Pool::new(&[ServerLimits::new(max)], settings())
}

fn key(name: &str) -> QueueKey {
    QueueKey::from(name)
}

/// A lease filled with `value` (when its slot came empty) and then finished clean.
async fn take(pool: &Pool<i32>, who: &str, value: i32) -> Lease<i32> {
    let mut lease = pool.acquire(key(who), None).await.unwrap();
    if lease.take().is_none() {
        lease.fill(value, false);
    } else {
        lease.fill(value, true);
    }
    lease
}

fn give_back(mut lease: Lease<i32>) {
    lease.finish();
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn a_clean_value_is_kept_and_handed_to_the_next_caller() {
    let pool = one_server(2);
    let mut lease = pool.acquire(key("a"), None).await.unwrap();
    assert!(!lease.is_reused(), "a fresh slot comes empty");
    assert_eq!(lease.take(), None);
    lease.fill(7, false);
    give_back(lease);
    assert_eq!(pool.totals(), (1, 1, 0));
    let mut again = pool.acquire(key("b"), None).await.unwrap();
    assert!(again.is_reused());
    assert_eq!(again.take(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_dirty_or_unfinished_value_is_dropped_and_frees_its_slot() {
    let pool = one_server(2);
    let lease = take(&pool, "a", -1).await;
    give_back(lease);
    assert_eq!(pool.totals(), (0, 0, 0), "a dirty value is not kept");
    // Dropped without `finish` (the response was abandoned): not kept either.
    let lease = take(&pool, "a", 3).await;
    drop(lease);
    assert_eq!(pool.totals(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn callers_beyond_the_bound_wait_and_are_served_in_turn() {
    let pool = one_server(1);
    let held = take(&pool, "a", 1).await;
    let mut waiter = Box::pin(pool.acquire(key("a"), None));
    assert!(pending(&mut waiter));
    assert_eq!(
        pool.totals(),
        (1, 0, 1),
        "one slot open, one caller waiting"
    );
    give_back(held);
    let mut lease = waiter.await.unwrap();
    assert_eq!(lease.take(), Some(1), "the freed value went to the waiter");
    assert_eq!(pool.totals(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_queue_timeout_fails_as_overloaded_and_leaves_the_queue() {
    let pool = one_server(1);
    let _held = take(&pool, "a", 1).await;
    let err = pool.acquire(key("b"), None).await.unwrap_err();
    assert!(err.is_queue_timeout() && err.is_overloaded(), "{err}");
    assert_eq!(pool.totals(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let pool = Pool::new(
        &[ServerLimits::new(1)],
        Settings {
            max_queue: 1,
            ..settings()
        },
    );
    let _held = take(&pool, "a", 1).await;
    let mut first = Box::pin(pool.acquire(key("a"), None));
    assert!(pending(&mut first));
    let err = pool.acquire(key("b"), None).await.unwrap_err();
    assert!(err.is_overloaded() && !err.is_timeout(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_passes_what_it_was_handed_to_the_next_waiter() {
    let pool = one_server(1);
    let held = take(&pool, "a", 1).await;
    let mut first = Box::pin(pool.acquire(key("a"), None));
    assert!(pending(&mut first));
    let mut second = Box::pin(pool.acquire(key("b"), None));
    assert!(pending(&mut second));
    // The value goes to `first`, whose caller gives up before taking it.
    give_back(held);
    drop(first);
    let mut lease = second.await.unwrap();
    assert_eq!(lease.take(), Some(1));
    assert_eq!(pool.totals(), (1, 0, 0), "nothing leaked");
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_to_the_waiting_key_holding_fewer() {
    let pool = one_server(2);
    let a1 = take(&pool, "a", 1).await;
    let a2 = take(&pool, "a", 2).await;
    let mut a_waits = Box::pin(pool.acquire(key("a"), None));
    assert!(pending(&mut a_waits));
    let mut b_waits = Box::pin(pool.acquire(key("b"), None));
    assert!(pending(&mut b_waits));
    give_back(a1);
    // b holds none, a holds one: b is served though a queued first.
    assert!(pending(&mut a_waits));
    let b = b_waits.await.unwrap();
    assert_eq!((pool.in_use("a"), pool.in_use("b")), (1, 1));
    give_back(a2);
    let a = a_waits.await.unwrap();
    assert_eq!(pool.in_use("a"), 1);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn a_capped_key_waits_while_others_are_served() {
    let pool = one_server(4);
    let held = pool.acquire(key("a"), Some(1)).await.unwrap();
    let mut capped = Box::pin(pool.acquire(key("a"), Some(1)));
    assert!(pending(&mut capped));
    let other = pool.acquire(key("b"), None).await.unwrap();
    drop(held);
    let again = capped.await.unwrap();
    drop((again, other));
}

#[tokio::test(start_paused = true)]
async fn the_reaper_closes_values_idle_past_the_timeout() {
    let pool = one_server(2);
    let first = take(&pool, "a", 1).await;
    let second = take(&pool, "a", 2).await;
    give_back(first);
    tokio::time::sleep(Duration::from_secs(6)).await;
    give_back(second);
    assert_eq!(pool.totals(), (2, 2, 0));
    // The reaper runs every 5 s (half the timeout): at 10 s the first has been idle 10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.totals(), (1, 1, 0), "only the older one was closed");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(pool.totals(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_is_not_handed_out_though_the_reaper_has_not_run() {
    // Made outside the runtime: no reaper.
    let pool = std::thread::spawn(|| one_server(1)).join().unwrap();
    give_back(take(&pool, "a", 1).await);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut lease = pool.acquire(key("a"), None).await.unwrap();
    assert_eq!(
        lease.take(),
        None,
        "the stale value was closed; the slot is kept"
    );
    assert_eq!(pool.totals(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn servers_keep_their_own_bounds_and_a_freed_slot_of_any_serves_a_waiter() {
    let pool = Pool::new(&[ServerLimits::new(1), ServerLimits::new(2)], settings());
    let leases = [
        take(&pool, "a", 1).await,
        take(&pool, "a", 2).await,
        take(&pool, "a", 3).await,
    ];
    let mut servers: Vec<usize> = leases.iter().map(Lease::server).collect();
    servers.sort_unstable();
    assert_eq!(servers, [0, 1, 1], "each server filled to its own bound");
    let mut waiter = Box::pin(pool.acquire(key("b"), None));
    assert!(pending(&mut waiter));
    let mut leases = Vec::from(leases);
    let on_0 = leases.iter().position(|l| l.server() == 0).unwrap();
    give_back(leases.remove(on_0));
    let lease = waiter.await.unwrap();
    assert_eq!(
        lease.server(),
        0,
        "the waiter got the slot freed on server 0"
    );
    let stats = pool.server_stats();
    assert_eq!((stats[0].open, stats[1].open), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn with_every_server_down_callers_fail_at_once_waiters_included() {
    let pool = Pool::new(&[ServerLimits::new(1), ServerLimits::new(1)], settings());
    let held = [take(&pool, "a", 1).await, take(&pool, "a", 2).await];
    let mut waiter = Box::pin(pool.acquire(key("b"), None));
    assert!(pending(&mut waiter));
    pool.set_healthy(0, false);
    assert!(pending(&mut waiter), "one server is still up");
    pool.set_healthy(1, false);
    let err = waiter.await.unwrap_err();
    assert!(err.is_all_down(), "{err}");
    let err = pool.acquire(key("c"), None).await.unwrap_err();
    assert!(err.is_all_down(), "{err}");
    // Back from a down server, the values are closed, not kept.
    for lease in held {
        give_back(lease);
    }
    assert_eq!(pool.totals(), (0, 0, 0));
    pool.set_healthy(1, true);
    let lease = pool.acquire(key("c"), None).await.unwrap();
    assert_eq!(lease.server(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_marked_down_closes_its_idle_values() {
    let pool = Pool::new(&[ServerLimits::new(1), ServerLimits::new(1)], settings());
    let (a, b) = (take(&pool, "a", 1).await, take(&pool, "a", 2).await);
    let down = a.server();
    give_back(a);
    give_back(b);
    pool.set_healthy(down, false);
    let stats = pool.server_stats();
    assert!(!stats[down].healthy);
    assert_eq!((stats[down].open, stats[down].idle), (0, 0));
    assert_eq!((stats[1 - down].open, stats[1 - down].idle), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_backup_serves_only_while_no_primary_is_healthy() {
    let backup = ServerLimits {
        backup: true,
        ..ServerLimits::new(4)
    };
    let pool = Pool::new(&[ServerLimits::new(1), backup], settings());
    let primary = take(&pool, "a", 1).await;
    assert_eq!(primary.server(), 0);
    // The primary is full: wait for it rather than spill onto the backup.
    let mut waiter = Box::pin(pool.acquire(key("a"), None));
    assert!(pending(&mut waiter));
    pool.set_healthy(0, false);
    let lease = waiter.await.unwrap();
    assert_eq!(lease.server(), 1, "the waiter went to the backup");
    drop((primary, lease));
}

#[tokio::test(start_paused = true)]
async fn a_protocol_fault_marks_its_server_down_when_the_pool_marks_servers() {
    let pool = Pool::new(&[ServerLimits::new(1), ServerLimits::new(1)], settings());
    let mut lease = take(&pool, "a", 1).await;
    let server = lease.server();
    lease.fault();
    lease.finish();
    drop(lease);
    let stats = pool.server_stats();
    assert!(
        !stats[server].healthy && stats[server].faults == 1,
        "{stats:?}"
    );
    assert_eq!(stats[server].open, 0, "a faulted value is not kept");

    let lone = Pool::new(
        &[ServerLimits::new(1)],
        Settings {
            mark_on_fault: false,
            ..settings()
        },
    );
    let mut lease = take(&lone, "a", 1).await;
    lease.fault();
    drop(lease);
    let stats = lone.server_stats();
    assert!(stats[0].healthy && stats[0].faults == 1, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_successor_takes_the_kept_values_of_the_servers_it_kept_and_the_rest_close() {
    let limits = [ServerLimits::new(2), ServerLimits::new(2)];
    let old = Pool::new(&limits, settings());
    // Two values of each server: one idle, one still leased during the reload.
    let leases = [
        take(&old, "a", 10).await,
        take(&old, "a", 20).await,
        take(&old, "a", 11).await,
        take(&old, "a", 21).await,
    ];
    let [idle_a, idle_b, busy_a, busy_b] = leases;
    let (kept_server, gone_server) = (idle_a.server(), idle_b.server());
    assert_ne!(kept_server, gone_server);
    give_back(idle_a);
    give_back(idle_b);

    // The new pool kept `kept_server` (as its only server) and dropped the other.
    let new = one_server(2);
    let mut map = vec![None, None];
    map[kept_server] = Some(0);
    new.succeed(&old, map);
    let stats = new.server_stats();
    assert_eq!(
        (stats[0].open, stats[0].idle),
        (1, 1),
        "the idle value moved"
    );
    let old_stats = old.server_stats();
    assert_eq!(old_stats[kept_server].idle + old_stats[gone_server].idle, 0);

    // The leased ones: the kept server's goes on to the new pool, the other closes.
    let (busy_kept, busy_gone) = if busy_a.server() == kept_server {
        (busy_a, busy_b)
    } else {
        (busy_b, busy_a)
    };
    give_back(busy_kept);
    give_back(busy_gone);
    assert_eq!(old.totals(), (0, 0, 0), "nothing left open in the old pool");
    assert_eq!(
        new.totals(),
        (2, 2, 0),
        "the kept server's two values, no other"
    );

    // And they are the ones handed out.
    let mut lease = new.acquire(key("b"), None).await.unwrap();
    assert!(lease.is_reused());
    assert!(matches!(lease.take(), Some(10 | 11 | 20 | 21)));
}

#[tokio::test(start_paused = true)]
async fn a_successor_adopts_no_more_than_its_bound() {
    let old = one_server(3);
    let leases = [
        take(&old, "a", 1).await,
        take(&old, "a", 2).await,
        take(&old, "a", 3).await,
    ];
    for lease in leases {
        give_back(lease);
    }
    let new = one_server(2);
    new.succeed(&old, vec![Some(0)]);
    assert_eq!(new.totals(), (2, 2, 0));
    assert_eq!(old.totals(), (0, 0, 0), "the surplus is closed");
}
