//! The response cache: per tenant, entries weighed by bytes in a `moka` cache bounded by
//! the tenant's `max_memory`, all tenants together by `[cache] memory`. A tenant's store
//! evicts within its own bound; when the whole cache is full, room is made by dropping
//! the least recently used answers of the tenants holding the most memory (nginx's cache manager
//! evicting across its zone), never by refusing a new answer while old ones stay.
//!
//! A leaf over `config`: it stores and finds answers, and knows nothing of PHP-FPM or
//! response bodies. The request path (`cached_origin`) drives it: [`TenantStore::lookup`]
//! says fresh, stale or miss, and hands out the one [`Fill`] per key that may ask PHP
//! (the others wait for it, bounded); the filler stores PHP's answer with
//! [`Fill::store`].
//!
//! - `policy`: what may be answered from and stored in the cache (pure).
//! - `entry`: a stored answer, and the 200/304/206 made from it.

mod entry;
pub mod policy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use tokio::sync::watch;

pub use entry::{Entry, CACHE_STATUS};
pub use policy::Freshness;

use crate::config::{Config, TenantCache};

/// How long a request waits for another one filling the same key before it goes to PHP
/// itself (nginx's `fastcgi_cache_lock_timeout`).
pub const FILL_WAIT: Duration = Duration::from_secs(5);

/// The name in `Cache-Status` (RFC 9211).
const CACHE_NAME: &str = "fcgi-gateway";

/// Where an answer is stored: its URL as the tenant's clients name it, and for an answer
/// with `Vary`, the values of the named request headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    /// Normalised host (lower case, no port).
    host: Box<str>,
    /// Path and query as requested.
    target: Box<str>,
    /// `None` for the URL's own slot (which, for an answer with `Vary`, holds the header
    /// names); else the varied headers' values.
    variant: Option<Box<str>>,
}

/// What a slot holds.
#[derive(Debug, Clone)]
enum Stored {
    /// The URL's answers vary on these request headers; each variant has its own slot.
    Vary(Arc<[HeaderName]>, Freshness),
    /// An answer.
    Answer(Arc<Entry>),
}

impl Stored {
    fn weight(&self) -> u64 {
        match self {
            Stored::Vary(names, _) => {
                64 + names.iter().map(|n| n.as_str().len() as u64).sum::<u64>()
            }
            Stored::Answer(entry) => entry.weight(),
        }
    }

    fn lifetime(&self) -> Duration {
        match self {
            Stored::Vary(_, fresh) => fresh.lifetime(),
            Stored::Answer(entry) => entry.freshness().lifetime(),
        }
    }
}

/// Entries live as long as they may be served at all (fresh, then stale).
struct Lifetime;

impl moka::Expiry<Key, Stored> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Stored,
        _created: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Stored,
        _updated: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }
}

/// The request a lookup is for.
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    /// Whether the client came over TLS (or a trusted proxy said so).
    pub https: bool,
    /// The normalised host.
    pub host: &'a str,
    /// Path and query.
    pub target: &'a str,
    /// The request's headers (for `Vary`).
    pub headers: &'a HeaderMap,
}

impl RequestKey<'_> {
    fn base(&self) -> Key {
        Key {
            https: self.https,
            host: self.host.into(),
            target: self.target.into(),
            variant: None,
        }
    }
}

/// The values of the `names` request headers, as one variant key.
fn variant_of(names: &[HeaderName], headers: &HeaderMap) -> Box<str> {
    let mut out = String::new();
    for name in names {
        for value in headers.get_all(name) {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
            out.push(',');
        }
        out.push('\n');
    }
    out.into()
}

/// The request header names in an answer's `Vary` (lower case, each once), `None`
/// without one.
fn vary_names(headers: &HeaderMap) -> Option<Arc<[HeaderName]>> {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    (!names.is_empty()).then(|| names.into())
}

/// What the cache has for a request.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh answer (`collapsed`: it arrived while this request waited for its fill).
    Fresh {
        /// The entry.
        entry: Arc<Entry>,
        /// Whether the request waited for another's fill.
        collapsed: bool,
    },
    /// An answer past its freshness but within `stale-while-revalidate`: served as it
    /// is; `refresh` is this request's right to refresh it in the background (`None`
    /// when another request already is).
    Stale {
        /// The entry.
        entry: Arc<Entry>,
        /// The fill for a background refresh, if this request got it.
        refresh: Option<Fill>,
    },
    /// Nothing servable: ask PHP. `fill` stores the answer (`None`: another request held
    /// the key past [`FILL_WAIT`]; go uncached). `stale` may answer if PHP fails.
    Miss {
        /// The fill, if this request got it.
        fill: Option<Fill>,
        /// An expired entry still within `stale-if-error`.
        stale: Option<Arc<Entry>>,
        /// `Cache-Status`'s `fwd`: `uri-miss`, `vary-miss` or `stale`.
        reason: &'static str,
    },
}

/// Counters and gauge of one tenant's cache, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes its entries take.
    pub memory: u64,
    /// Entries (URL slots and answers).
    pub entries: u64,
}

/// One tenant's entries and fills.
pub struct TenantStore {
    settings: TenantCache,
    entries: moka::sync::Cache<Key, Stored>,
    /// Keys being filled: a waiter's receiver wakes when the fill ends.
    fills: Mutex<HashMap<Key, watch::Receiver<()>>>,
    /// Bytes held (kept by the insert and the eviction listener).
    bytes: Arc<AtomicU64>,
    /// The whole cache's byte bound and the gauge of every store.
    global: Arc<Global>,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("settings", &self.settings)
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What every store shares: `[cache] memory` and the bytes held over all stores.
#[derive(Debug, Default)]
struct Global {
    memory: AtomicU64,
    bytes: AtomicU64,
    /// Every store made for this cache (the dead ones pruned as new ones come), for
    /// making room across tenants.
    stores: Mutex<Vec<Weak<TenantStore>>>,
}

impl Global {
    /// Keeps `store` among the stores room may be made in.
    fn register(&self, store: &Arc<TenantStore>) {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|weak| weak.strong_count() > 0);
        stores.push(Arc::downgrade(store));
    }

    /// Frees room for `need` more bytes under `memory`: drops the least recently used answers of the
    /// store holding the most bytes, then of the next. Frees an eighth of `memory`
    /// beyond `need` at once, so a full cache does not scan its entries on every insert.
    fn make_room(&self, need: u64, memory: u64) {
        let goal = memory.saturating_sub(need.saturating_add(memory / 8));
        let mut stores: Vec<Arc<TenantStore>> = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        stores.sort_by_key(|store| std::cmp::Reverse(store.bytes.load(Ordering::Relaxed)));
        for store in stores {
            let held = self.bytes.load(Ordering::Relaxed);
            if held <= goal {
                break;
            }
            store.drop_least_used(held - goal);
        }
    }
}

impl TenantStore {
    fn new(settings: TenantCache, global: Arc<Global>) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let listener_bytes = bytes.clone();
        let listener_global = global.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_memory)
            .weigher(|_key: &Key, value: &Stored| u32::try_from(value.weight()).unwrap_or(u32::MAX))
            .expire_after(Lifetime)
            .eviction_listener(move |_key, value: Stored, _cause| {
                let weight = value.weight();
                listener_bytes.fetch_sub(weight, Ordering::Relaxed);
                listener_global.bytes.fetch_sub(weight, Ordering::Relaxed);
            })
            .build();
        Self {
            settings,
            entries,
            fills: Mutex::default(),
            bytes,
            global,
        }
    }

    /// The tenant's resolved settings.
    pub fn settings(&self) -> &TenantCache {
        &self.settings
    }

    /// The answer stored for `request`, if any (any age).
    fn find(&self, request: &RequestKey<'_>) -> (Option<Arc<Entry>>, &'static str) {
        let base = request.base();
        match self.entries.get(&base) {
            None => (None, "uri-miss"),
            Some(Stored::Answer(entry)) => (Some(entry), "stale"),
            Some(Stored::Vary(names, _)) => {
                let key = Key {
                    variant: Some(variant_of(&names, request.headers)),
                    ..base
                };
                match self.entries.get(&key) {
                    Some(Stored::Answer(entry)) => (Some(entry), "stale"),
                    _ => (None, "vary-miss"),
                }
            }
        }
    }

    /// The fresh answer stored for `request`, if there is one; never waits or fills (the
    /// cheap first look of a hit).
    pub fn fresh(&self, request: &RequestKey<'_>) -> Option<Arc<Entry>> {
        self.find(request).0.filter(|entry| entry.is_fresh())
    }

    /// Looks `request` up; on a miss, waits (up to [`FILL_WAIT`]) for a request already
    /// filling the same URL, so PHP runs once per key.
    pub async fn lookup(self: &Arc<Self>, request: &RequestKey<'_>) -> Lookup {
        let mut waited = false;
        loop {
            let (found, reason) = self.find(request);
            if let Some(entry) = &found {
                if entry.is_fresh() {
                    return Lookup::Fresh {
                        entry: entry.clone(),
                        collapsed: waited,
                    };
                }
                if entry.within_stale_while_revalidate() {
                    let refresh = self.try_fill(request).ok();
                    return Lookup::Stale {
                        entry: entry.clone(),
                        refresh,
                    };
                }
            }
            let stale = found.filter(|entry| entry.within_stale_if_error());
            match self.try_fill(request) {
                Ok(fill) => {
                    return Lookup::Miss {
                        fill: Some(fill),
                        stale,
                        reason,
                    }
                }
                Err(mut busy) if !waited => {
                    waited = true;
                    // A closed channel (the fill ended) or the bound: look again.
                    let _ = tokio::time::timeout(FILL_WAIT, busy.changed()).await;
                }
                Err(_) => {
                    return Lookup::Miss {
                        fill: None,
                        stale,
                        reason,
                    }
                }
            }
        }
    }

    /// The fill of `request`'s URL, or the receiver of whoever holds it.
    fn try_fill(self: &Arc<Self>, request: &RequestKey<'_>) -> Result<Fill, watch::Receiver<()>> {
        let base = request.base();
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(busy) = fills.get(&base) {
            return Err(busy.clone());
        }
        let (done, waiting) = watch::channel(());
        fills.insert(base.clone(), waiting);
        Ok(Fill {
            store: self.clone(),
            base,
            done: Some(done),
        })
    }

    fn insert(&self, key: Key, value: Stored) -> bool {
        let weight = value.weight();
        if weight > self.settings.max_memory {
            return false;
        }
        let memory = self.global.memory.load(Ordering::Relaxed);
        if self.global.bytes.load(Ordering::Relaxed) + weight > memory {
            // The whole cache is full: expired entries go first, then the least used answers
            // of the tenants holding the most.
            self.entries.run_pending_tasks();
            if self.global.bytes.load(Ordering::Relaxed) + weight > memory {
                self.global.make_room(weight, memory);
            }
            if self.global.bytes.load(Ordering::Relaxed) + weight > memory {
                return false;
            }
        }
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        self.global.bytes.fetch_add(weight, Ordering::Relaxed);
        self.entries.insert(key, value);
        true
    }

    /// Drops the entries `matches` selects (by host and path-and-query); returns how many
    /// URLs went.
    fn purge_where(&self, matches: impl Fn(&Key, &Stored) -> bool) -> u64 {
        let doomed: Vec<Arc<Key>> = self
            .entries
            .iter()
            .filter(|(key, value)| matches(key, value))
            .map(|(key, _)| key)
            .collect();
        let mut urls = 0;
        for key in &doomed {
            if key.variant.is_none() {
                urls += 1;
            }
            self.entries.invalidate(key.as_ref());
        }
        self.entries.run_pending_tasks();
        urls
    }

    /// Drops its least recently used answers until `amount` bytes went (or none is left).
    /// URL slots of `Vary` answers stay (they are small, and expire with their answers).
    fn drop_least_used(&self, amount: u64) {
        let mut answers: Vec<(u64, Arc<Key>, u64)> = self
            .entries
            .iter()
            .filter_map(|(key, value)| match value {
                Stored::Answer(entry) => Some((entry.unused_for_ms(), key, entry.weight())),
                Stored::Vary(..) => None,
            })
            .collect();
        answers.sort_by_key(|(unused, _, _)| std::cmp::Reverse(*unused));
        let mut freed = 0;
        for (_, key, weight) in answers {
            if freed >= amount {
                break;
            }
            self.entries.invalidate(key.as_ref());
            freed += weight;
        }
        // The eviction listener takes their bytes off the counts.
        self.entries.run_pending_tasks();
    }

    /// Drops everything.
    fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }

    /// Its memory and entry count.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            memory: self.bytes.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }
}

impl Drop for TenantStore {
    fn drop(&mut self) {
        // A store replaced while a fill was in flight may still hold that entry: its
        // bytes leave the global count with it.
        let left = self.bytes.swap(0, Ordering::Relaxed);
        self.global.bytes.fetch_sub(left, Ordering::Relaxed);
    }
}

/// The right to ask PHP for one URL and store the answer. Requests waiting for the same
/// URL wake when it is dropped (stored or not).
#[derive(Debug)]
pub struct Fill {
    store: Arc<TenantStore>,
    base: Key,
    done: Option<watch::Sender<()>>,
}

/// Why an answer was not stored, as `Cache-Status`'s `detail`.
pub type NotStored = &'static str;

impl Fill {
    /// The store it fills.
    pub fn store_of(&self) -> &Arc<TenantStore> {
        &self.store
    }

    /// Whether PHP's answer (`status`, `headers`) may be stored, and for how long.
    pub fn judge(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        request_headers: &HeaderMap,
    ) -> Result<Freshness, NotStored> {
        policy::freshness(
            status,
            headers,
            request_headers.contains_key(header::COOKIE),
            &self.store.settings,
            SystemTime::now(),
        )
    }

    /// Stores PHP's whole answer under the URL (and its variant, with `Vary`), with its
    /// body compressed per encoding (`encoded`, weighed with it), waking the requests
    /// that waited for it.
    pub fn store(
        self,
        request_headers: &HeaderMap,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        freshness: Freshness,
        encoded: Vec<(crate::compression::Encoding, Bytes)>,
    ) -> Result<Arc<Entry>, NotStored> {
        let vary = vary_names(&headers);
        let entry = Arc::new(Entry::new(status, headers, body, freshness).with_encoded(encoded));
        let stored = match vary {
            None => self
                .store
                .insert(self.base.clone(), Stored::Answer(entry.clone())),
            Some(names) => {
                let key = Key {
                    variant: Some(variant_of(&names, request_headers)),
                    ..self.base.clone()
                };
                self.store.insert(key, Stored::Answer(entry.clone()))
                    && self
                        .store
                        .insert(self.base.clone(), Stored::Vary(names, freshness))
            }
        };
        if stored {
            Ok(entry)
        } else {
            Err("cache-full")
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let mut fills = self.store.fills.lock().unwrap_or_else(|e| e.into_inner());
        fills.remove(&self.base);
        drop(fills);
        // Dropping the sender wakes every waiter.
        self.done.take();
    }
}

/// What a purge removes, within one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    /// URLs: `/path?query` (any of the tenant's hosts) or `https://host/path?query`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// A path prefix (`/blog/`): every URL under it, on any host of the tenant.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Tags PHP sent in `Cache-Tag` or `Surrogate-Key`.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Purge {
    /// Whether it names nothing, which purges the whole tenant.
    pub fn is_everything(&self) -> bool {
        self.urls.is_empty() && self.prefix.is_none() && self.tags.is_empty()
    }
}

/// A URL to purge, split: an absolute URL names its scheme and host.
struct PurgeUrl<'a> {
    https: Option<bool>,
    host: Option<String>,
    target: &'a str,
}

fn split_url(url: &str) -> PurgeUrl<'_> {
    for (scheme, https) in [("https://", true), ("http://", false)] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (authority, target) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, "/"),
            };
            let host = authority.split(':').next().unwrap_or(authority);
            return PurgeUrl {
                https: Some(https),
                host: Some(host.trim_end_matches('.').to_ascii_lowercase()),
                target,
            };
        }
    }
    PurgeUrl {
        https: None,
        host: None,
        target: url,
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// Every tenant's store, rebuilt from each config the gateway serves.
#[derive(Debug, Default)]
pub struct ResponseCache {
    stores: RwLock<HashMap<Arc<str>, Arc<TenantStore>>>,
    global: Arc<Global>,
}

impl ResponseCache {
    /// The cache for `config` (empty).
    pub fn new(config: &Config) -> Self {
        let cache = Self::default();
        cache.reconcile(None, config);
        cache
    }

    /// The store of `tenant`, when its answers are cached.
    pub fn tenant(&self, tenant: &str) -> Option<Arc<TenantStore>> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores.get(tenant).cloned()
    }

    /// Follows a config change: a tenant removed, suspended, changed in any setting, or
    /// whose cache settings changed loses its entries; a tenant newly cached gets an
    /// empty store. `previous` is the config served until now.
    pub fn reconcile(&self, previous: Option<&Config>, config: &Config) {
        // A hit is answered before the path is mapped to a script (see
        // `cached_origin::fresh_hit`): another root or index may map a URL elsewhere.
        let same_mapping = previous.is_some_and(|prev| {
            prev.fastcgi.root == config.fastcgi.root && prev.fastcgi.index == config.fastcgi.index
        });
        self.global
            .memory
            .store(config.cache.memory, Ordering::Relaxed);
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for (name, tenant) in &config.tenants {
            if !tenant.enabled {
                continue;
            }
            let Some(settings) = config.cache_for(tenant) else {
                continue;
            };
            let unchanged = same_mapping
                && previous.is_some_and(|prev| {
                    prev.tenants.get(name) == Some(tenant)
                        && prev.cache_for(tenant).as_ref() == Some(&settings)
                });
            let kept = stores
                .get(name.as_str())
                .filter(|store| unchanged && store.settings == settings)
                .cloned();
            let store = kept.unwrap_or_else(|| {
                let store = Arc::new(TenantStore::new(settings, self.global.clone()));
                self.global.register(&store);
                store
            });
            next.insert(Arc::<str>::from(name.as_str()), store);
        }
        for (name, store) in stores.iter() {
            let same = next.get(name).is_some_and(|kept| Arc::ptr_eq(kept, store));
            if !same {
                tracing::debug!(tenant = %name, "response cache entries dropped");
                store.clear();
            }
        }
        *stores = next;
    }

    /// Purges `tenant`'s entries `purge` names; returns how many URLs went (`None`: the
    /// tenant has no cache).
    pub fn purge(&self, tenant: &str, purge: &Purge) -> Option<u64> {
        let store = self.tenant(tenant)?;
        if purge.is_everything() {
            let urls = store
                .entries
                .iter()
                .filter(|(key, _)| key.variant.is_none())
                .count() as u64;
            store.clear();
            return Some(urls);
        }
        let urls: Vec<PurgeUrl<'_>> = purge.urls.iter().map(|u| split_url(u)).collect();
        let purged = store.purge_where(|key, value| {
            let by_url = urls.iter().any(|url| {
                url.target == &*key.target
                    && url.https.is_none_or(|https| https == key.https)
                    && url.host.as_deref().is_none_or(|host| host == &*key.host)
            });
            let by_prefix = purge
                .prefix
                .as_deref()
                .is_some_and(|prefix| path_of(&key.target).starts_with(prefix));
            let by_tag = match value {
                Stored::Answer(entry) => entry
                    .tags()
                    .iter()
                    .any(|tag| purge.tags.iter().any(|t| **tag == **t)),
                Stored::Vary(..) => false,
            };
            by_url || by_prefix || by_tag
        });
        Some(purged)
    }

    /// Each cached tenant's memory and entries.
    pub fn stats(&self) -> Vec<(Arc<str>, StoreStats)> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = stores
            .iter()
            .map(|(name, store)| (name.clone(), store.stats()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// `Cache-Status` values (RFC 9211).
pub mod status {
    use super::*;

    fn value(text: String) -> HeaderValue {
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }

    /// A hit: `hit; ttl=N`, with `detail` for a stale answer.
    pub fn hit(entry: &Entry, detail: Option<&str>) -> HeaderValue {
        let ttl = entry.ttl_seconds();
        match detail {
            Some(detail) => value(format!("{CACHE_NAME}; hit; ttl={ttl}; detail={detail}")),
            None => value(format!("{CACHE_NAME}; hit; ttl={ttl}")),
        }
    }

    /// Sent to PHP: `fwd=REASON`, `stored` when the answer was stored, else `detail`.
    pub fn forwarded(reason: &str, stored: bool, detail: Option<&str>) -> HeaderValue {
        let mut text = format!("{CACHE_NAME}; fwd={reason}");
        if stored {
            text.push_str("; stored");
        }
        if let Some(detail) = detail {
            text.push_str("; detail=");
            text.push_str(detail);
        }
        value(text)
    }

    /// Not looked up: `fwd=bypass; detail=WHY`.
    pub fn bypass(detail: &str) -> HeaderValue {
        value(format!("{CACHE_NAME}; fwd=bypass; detail={detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(memory: u64) -> Arc<TenantStore> {
        let global = Arc::new(Global::default());
        global.memory.store(memory, Ordering::Relaxed);
        store_in(&global, memory)
    }

    /// A store of `max_memory` in the cache `global` (registered for making room).
    fn store_in(global: &Arc<Global>, max_memory: u64) -> Arc<TenantStore> {
        let store = Arc::new(TenantStore::new(
            TenantCache {
                max_memory,
                default_ttl: Duration::ZERO,
                bypass_cookies: Vec::new(),
                stale_if_error: Duration::ZERO,
                max_body: 1 << 20,
            },
            global.clone(),
        ));
        global.register(&store);
        store
    }

    fn key(target: &str) -> Key {
        Key {
            https: false,
            host: "a".into(),
            target: target.into(),
            variant: None,
        }
    }

    fn answer(len: usize) -> Stored {
        Stored::Answer(Arc::new(Entry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![0; len]),
            fresh(),
        )))
    }

    fn fresh() -> Freshness {
        Freshness {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_filled_entry_answers_and_vary_keeps_variants_apart() {
        let store = store(1 << 20);
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        let key = |headers| RequestKey {
            https: false,
            host: "a.example",
            target: "/x?y",
            headers,
        };
        let Lookup::Miss {
            fill: Some(fill), ..
        } = store.lookup(&key(&en)).await
        else {
            panic!("first lookup misses")
        };
        let mut headers = HeaderMap::new();
        headers.insert("vary", HeaderValue::from_static("Accept-Language"));
        fill.store(
            &en,
            StatusCode::OK,
            headers,
            Bytes::from_static(b"english"),
            fresh(),
            Vec::new(),
        )
        .unwrap();
        assert!(matches!(
            store.lookup(&key(&en)).await,
            Lookup::Fresh { .. }
        ));
        match store.lookup(&key(&fr)).await {
            Lookup::Miss { reason, .. } => assert_eq!(reason, "vary-miss"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_over_the_memory_bound_are_not_stored() {
        let store = store(1000);
        let base = Key {
            https: false,
            host: "a".into(),
            target: "/".into(),
            variant: None,
        };
        let big = Entry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![0; 2000]),
            fresh(),
        );
        assert!(!store.insert(base, Stored::Answer(Arc::new(big))));
        assert_eq!(store.stats().memory, 0);
    }

    #[test]
    fn a_full_cache_drops_the_least_used_answers_of_the_biggest_tenant_for_a_new_one() {
        let global = Arc::new(Global::default());
        global.memory.store(10_000, Ordering::Relaxed);
        let (big, small) = (store_in(&global, 10_000), store_in(&global, 10_000));
        let pause = || std::thread::sleep(Duration::from_millis(60));
        for page in ["/1", "/2", "/3", "/4"] {
            assert!(big.insert(key(page), answer(2000)));
            pause();
        }
        assert!(global.bytes.load(Ordering::Relaxed) > 8000);
        // The first page is asked for again: the second is now the least recently used.
        let Some(Stored::Answer(first)) = big.entries.get(&key("/1")) else {
            panic!("/1 is stored")
        };
        let _ = first.answer(&HeaderMap::new(), HeaderValue::from_static("x"));

        // No room left for it: the big tenant's least used answer makes it.
        assert!(small.insert(key("/s"), answer(2000)));
        assert!(global.bytes.load(Ordering::Relaxed) <= 10_000);
        assert!(small.entries.contains_key(&key("/s")));
        assert!(!big.entries.contains_key(&key("/2")), "the least used went");
        for kept in ["/1", "/3", "/4"] {
            assert!(big.entries.contains_key(&key(kept)), "{kept} stayed");
        }
        let held = big.stats().memory + small.stats().memory;
        assert_eq!(held, global.bytes.load(Ordering::Relaxed));
    }

    fn config(root: &str) -> Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"{root}\"\n\n\
             [cache]\nmemory = \"1MiB\"\n\n[defaults.cache]\nenabled = true\n\n\
             [tenants.a]\nhosts = [\"a.test\"]\n"
        );
        Config::parse(&text, "tenants.toml", std::path::Path::new("/"))
            .unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn another_root_drops_every_entry_and_an_unrelated_change_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let (app, other) = (dir.path().join("app"), dir.path().join("other"));
        std::fs::create_dir(&app).unwrap();
        std::fs::create_dir(&other).unwrap();
        let (app, other) = (app.display().to_string(), other.display().to_string());
        let first = config(&app);
        let cache = ResponseCache::new(&first);
        let store = cache.tenant("a").expect("a is cached");
        assert!(store.insert(key("/"), answer(10)));

        cache.reconcile(Some(&first), &config(&app));
        let kept = cache.tenant("a").expect("a is cached");
        assert!(kept.entries.contains_key(&key("/")), "nothing changed");

        cache.reconcile(Some(&first), &config(&other));
        let after = cache.tenant("a").expect("a is cached");
        assert!(
            !after.entries.contains_key(&key("/")),
            "a hit skips the path mapping"
        );
    }
}
