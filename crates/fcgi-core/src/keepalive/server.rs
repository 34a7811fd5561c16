//! The servers behind one pool: each with its own bound, weight, backup flag and health,
//! its idle values, and the choice of which server serves the next request.

use tokio::time::Instant;

/// How a server takes part in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most slots (open connections) on this server at once: its `pm.max_children` or
    /// fewer. A kept connection pins one of that host's workers.
    pub max_connections: usize,
    /// Share of the load relative to the other servers (at least 1): a server is chosen
    /// by the fewest slots in use relative to `max_connections` × `weight`.
    pub weight: u32,
    /// Used only while no primary server is healthy.
    pub backup: bool,
}

#[cfg(test)]
impl ServerLimits {
    /// A primary server of weight 1 holding at most `max_connections`.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            weight: 1,
            backup: false,
        }
    }
}

/// A value kept for reuse, with when it went idle.
#[derive(Debug)]
pub(super) struct Idle<T> {
    pub(super) value: T,
    pub(super) since: Instant,
}

/// One server's slots.
#[derive(Debug)]
pub(super) struct Server<T> {
    pub(super) limits: ServerLimits,
    /// Chosen for new requests; a server marked down is skipped and its idle values closed.
    pub(super) healthy: bool,
    /// Slots counted against `max_connections`: idle, leased and being opened.
    pub(super) open: usize,
    /// Idle values, most recently used last (reused first, so the rest age out).
    pub(super) idle: Vec<Idle<T>>,
    /// Times chosen, to break ties between equally loaded servers by weight.
    pub(super) picked: u64,
    /// Values given back clean: requests completed, which health checks count as passes.
    pub(super) completed: u64,
    /// Slots given back after the server broke the protocol on them.
    pub(super) faults: u64,
}

impl<T> Server<T> {
    pub(super) fn new(limits: ServerLimits) -> Self {
        Self {
            limits,
            healthy: true,
            open: 0,
            idle: Vec::new(),
            picked: 0,
            completed: 0,
            faults: 0,
        }
    }

    /// Slots leased or being opened.
    pub(super) fn in_use(&self) -> usize {
        self.open - self.idle.len()
    }

    fn has_room(&self) -> bool {
        !self.idle.is_empty() || self.open < self.limits.max_connections
    }

    /// `max_connections` × `weight`: what the load is measured against.
    fn capacity(&self) -> u128 {
        (self.limits.max_connections as u128).max(1) * u128::from(self.limits.weight.max(1))
    }
}

/// Where the next request can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    /// This server has an idle value or room for a new one.
    Server(usize),
    /// Healthy servers exist, all at their bound.
    Full,
    /// No server is healthy.
    Down,
}

/// The bounds of the servers new requests go to: the healthy primaries, or the healthy
/// backups while no primary is healthy.
pub(super) fn serving_capacity<T>(servers: &[Server<T>]) -> usize {
    let primary_up = servers.iter().any(|s| s.healthy && !s.limits.backup);
    servers
        .iter()
        .filter(|s| s.healthy && s.limits.backup != primary_up)
        .map(|s| s.limits.max_connections)
        .sum()
}

/// Picks a server: the healthy primaries, or the healthy backups when no primary is
/// healthy; among those with room, the fewest slots in use relative to
/// `max_connections` × `weight`, ties to the one picked least relative to its weight.
pub(super) fn choose<T>(servers: &[Server<T>]) -> Choice {
    let primary_up = servers.iter().any(|s| s.healthy && !s.limits.backup);
    let tier = |s: &Server<T>| s.healthy && s.limits.backup != primary_up;
    let mut best: Option<usize> = None;
    let mut any = false;
    for (index, server) in servers.iter().enumerate() {
        if !tier(server) {
            continue;
        }
        any = true;
        if !server.has_room() {
            continue;
        }
        let better = best.is_none_or(|b| less_loaded(server, &servers[b]));
        if better {
            best = Some(index);
        }
    }
    match best {
        Some(index) => Choice::Server(index),
        None if any => Choice::Full,
        None => Choice::Down,
    }
}

/// Whether `a` carries less than `b` for its size (cross-multiplied: no floats).
fn less_loaded<T>(a: &Server<T>, b: &Server<T>) -> bool {
    let (ca, cb) = (a.capacity(), b.capacity());
    let (la, lb) = (a.in_use() as u128 * cb, b.in_use() as u128 * ca);
    if la != lb {
        return la < lb;
    }
    let (wa, wb) = (
        u128::from(a.limits.weight.max(1)),
        u128::from(b.limits.weight.max(1)),
    );
    u128::from(a.picked) * wb < u128::from(b.picked) * wa
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(max: usize, weight: u32, backup: bool, in_use: usize) -> Server<i32> {
        let mut s = Server::new(ServerLimits {
            max_connections: max,
            weight,
            backup,
        });
        s.open = in_use;
        s
    }

    #[test]
    fn the_least_loaded_server_relative_to_its_bound_and_weight_is_chosen() {
        // 2 of 4 (half) against 3 of 8 (three eighths): the second.
        let servers = [server(4, 1, false, 2), server(8, 1, false, 3)];
        assert_eq!(choose(&servers), Choice::Server(1));
        // Weight 2 on the first: 2 of 8 against 3 of 8.
        let servers = [server(4, 2, false, 2), server(8, 1, false, 3)];
        assert_eq!(choose(&servers), Choice::Server(0));
    }

    #[test]
    fn ties_go_to_the_server_picked_least_for_its_weight() {
        let mut servers = [server(4, 1, false, 0), server(4, 2, false, 0)];
        let mut counts = [0; 2];
        for _ in 0..30 {
            let Choice::Server(i) = choose(&servers) else {
                panic!("a server has room");
            };
            servers[i].picked += 1;
            counts[i] += 1;
        }
        assert_eq!(counts, [10, 20]);
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_healthy() {
        let mut servers = [server(1, 1, false, 1), server(4, 1, true, 0)];
        // The primary is full but healthy: wait for it rather than use the backup.
        assert_eq!(choose(&servers), Choice::Full);
        servers[0].healthy = false;
        assert_eq!(choose(&servers), Choice::Server(1));
        servers[1].healthy = false;
        assert_eq!(choose(&servers), Choice::Down);
    }

    #[test]
    fn an_idle_value_is_room_even_at_the_bound() {
        let mut servers = [server(1, 1, false, 0)];
        servers[0].open = 1;
        servers[0].idle.push(Idle {
            value: 7,
            since: Instant::now(),
        });
        assert_eq!(choose(&servers), Choice::Server(0));
    }
}
