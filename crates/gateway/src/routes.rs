//! The routing table: its public shape, the compiled form the request path reads through one
//! atomic pointer, the choice of app / backend / instance, and the per-instance in-flight
//! counts that let the control plane drain an instance before stopping it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::head::{RequestHead, field_text};
use crate::random;

/// Immutable routing table of one environment; replaced whole by [`RouteHandle::set`], one
/// atomic swap, so a request sees either the old table or the new one, never a mix.
///
/// The default table is empty: every request gets 404 `no_route`.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// The apps served by this environment's gateway.
    pub apps: Vec<AppRoute>,
}

/// Where the traffic of one app goes.
#[derive(Clone, Debug, Default)]
pub struct AppRoute {
    /// App name, used as the metrics key and in the access log.
    pub app: String,
    /// Host names this app answers to, matched case-insensitively against the `Host` header
    /// without its port. Empty means any host; an app naming the host wins over an any-host app
    /// with the same prefix.
    pub hosts: Vec<String>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and `/api/users` but
    /// not `/apix`; a prefix ending in `/` (such as `/`) matches every path under it. The
    /// longest matching prefix wins among apps whose hosts match. Empty is treated as `/`.
    pub path_prefix: String,
    /// Weighted split of this app's traffic between versions.
    pub backends: Vec<Backend>,
    /// Keeps a client on one version while the weights change; `None` picks at random per
    /// request.
    pub sticky: Option<Sticky>,
    /// Alias names and the versions they point at, for the override header. A named version
    /// must be among the backends (with any weight, 0 included) to be reachable.
    pub aliases: Vec<(String, u64)>,
}

/// How the gateway keeps a client on one version of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// The gateway assigns a version by weight and remembers it in this cookie (`Path=/`,
    /// `HttpOnly`, `SameSite=Lax`); a client that returns with it stays on that version for
    /// as long as the version takes traffic.
    Cookie(String),
    /// A key the client already sends (e.g. a user id) in this header is hashed into the
    /// weight range. The candidate is listed first, so a key on the candidate stays there as
    /// its weight grows; a key on the stable version moves at most once, when the growing
    /// weight reaches it.
    Header(http::HeaderName),
    /// Like `Header`, with the key read from this cookie.
    KeyCookie(String),
}

/// One version of an app and its share of the app's traffic.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The version number, used as the metrics key.
    pub version: u64,
    /// Relative weight in units of 0.1 % (0..=1000); 0 gets no traffic. Weights are relative
    /// to the sum over the app's eligible backends, so they need not add up to 1000.
    pub weight: u32,
    /// Running copies of this version; requests go round-robin between them.
    pub instances: Vec<Upstream>,
}

/// One running instance that the gateway can forward to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Stable instance id, the key of in-flight counts and drains.
    pub id: String,
    /// Address of the instance's plain HTTP/1.1 listener.
    pub addr: SocketAddr,
}

/// Shared handle to a gateway's routing table and in-flight counts; cloning is cheap.
#[derive(Clone)]
pub struct RouteHandle {
    inner: Arc<RouteInner>,
}

struct RouteInner {
    compiled: ArcSwap<Compiled>,
    in_flight: RwLock<HashMap<String, Arc<AtomicU64>>>,
    /// Woken whenever an in-flight count drops to zero, so drains re-check without polling.
    idle: Notify,
}

/// The table as the request path needs it: hosts lowercased, prefixes normalised, and a
/// round-robin counter per backend that survives swaps for the same (app, version).
pub(crate) struct Compiled {
    table: Arc<RouteTable>,
    apps: Vec<CompiledApp>,
}

struct CompiledApp {
    app: Arc<str>,
    hosts: Vec<String>,
    prefix: String,
    backends: Vec<CompiledBackend>,
    sticky: Option<Sticky>,
    aliases: Vec<(String, u64)>,
}

/// What the request says that can steer routing: the override alias and the sticky inputs.
#[derive(Default)]
pub(crate) struct Hints<'a> {
    /// The value of the override header, if enabled and present.
    pub(crate) alias: Option<&'a str>,
    /// The request's head, for sticky keys and cookies.
    pub(crate) head: Option<&'a RequestHead>,
}

struct CompiledBackend {
    version: u64,
    weight: u32,
    instances: Vec<Arc<Instance>>,
    next: Arc<AtomicUsize>,
}

/// An upstream as the request path holds it, with its id ready to share without copying.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: Arc<str>,
    /// Where the instance listens.
    pub(crate) addr: std::net::SocketAddr,
    /// `addr` as a `Host` value, for the rare client request without one; made once per table.
    pub(crate) host: http::HeaderValue,
    /// Requests in flight to this instance (shared with every table naming it).
    pub(crate) in_flight: Arc<AtomicU64>,
}

/// What the route phase decided for one request.
pub(crate) struct Target {
    pub(crate) app: Arc<str>,
    pub(crate) version: u64,
    /// A `Set-Cookie` value to send back: the sticky assignment of a new client.
    pub(crate) set_cookie: Option<String>,
    /// The instances to try, in order: the round-robin pick first, then the others of the
    /// same backend as connect-failure fallbacks.
    pub(crate) instances: Vec<Arc<Instance>>,
}

/// Why the route phase could not pick an instance.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RouteMiss {
    /// No app matches the host and path.
    NoRoute,
    /// The app matched but none of its backends has weight and instances.
    NoUpstream(Arc<str>),
}

/// Decrements an instance's in-flight count when dropped.
pub(crate) struct InFlightGuard {
    counter: Arc<AtomicU64>,
    route: Arc<RouteInner>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.counter.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.route.idle.notify_waiters();
        }
    }
}

impl Default for RouteHandle {
    fn default() -> Self {
        Self::new(RouteTable::default())
    }
}

impl RouteHandle {
    /// A handle serving `table`.
    pub fn new(table: RouteTable) -> Self {
        let handle = Self {
            inner: Arc::new(RouteInner {
                compiled: ArcSwap::from_pointee(Compiled::new(
                    Arc::new(RouteTable::default()),
                    None,
                    &|_| Arc::default(),
                )),
                in_flight: RwLock::new(HashMap::new()),
                idle: Notify::new(),
            }),
        };
        // Compiled through `set`, so the instances get the handle's in-flight counters.
        handle.set(table);
        handle
    }

    /// Replaces the table in one atomic swap; the next request routes with it. Requests
    /// already forwarded keep going to the instances they picked (see [`RouteHandle::drain`]).
    pub fn set(&self, table: RouteTable) {
        let old = self.inner.compiled.load();
        let compiled = Compiled::new(Arc::new(table), Some(&old), &|id| self.counter(id));
        self.inner.compiled.store(Arc::new(compiled));
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<RouteTable> {
        Arc::clone(&self.inner.compiled.load().table)
    }

    /// Resolves `true` once no request is in flight to any of `upstream_ids`, or `false` when
    /// `timeout` passes first. Call it after [`RouteHandle::set`] has removed the instances,
    /// then stop them. A request counts as in flight from the moment it picked the instance
    /// until its response body has been sent (or the client went away).
    pub async fn drain(&self, upstream_ids: &[String], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a count reaching zero between the check
            // and the wait still wakes us.
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if upstream_ids.iter().all(|id| self.in_flight(id) == 0) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return upstream_ids.iter().all(|id| self.in_flight(id) == 0);
            }
        }
    }

    /// Number of requests in flight to the instance with this id now; 0 for unknown ids.
    pub fn in_flight(&self, upstream_id: &str) -> u64 {
        let map = self
            .inner
            .in_flight
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(upstream_id)
            .map_or(0, |counter| counter.load(Ordering::SeqCst))
    }

    /// Picks app, backend and instance for a request and counts it in flight on the first
    /// instance to try.
    ///
    /// The pick is made on a snapshot of the table; if the table was swapped between the pick
    /// and the in-flight increment, a drain that started after the swap may already have
    /// seen zero, so the pick is redone on the new table.
    #[cfg(test)]
    pub(crate) fn route(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Result<(Target, InFlightGuard), RouteMiss> {
        self.route_with(host, path, &Hints::default())
    }

    /// [`RouteHandle::route`] steered by the request's override alias and sticky inputs.
    pub(crate) fn route_with(
        &self,
        host: Option<&str>,
        path: &str,
        hints: &Hints<'_>,
    ) -> Result<(Target, InFlightGuard), RouteMiss> {
        const ATTEMPTS: usize = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let snapshot = self.inner.compiled.load_full();
            let target = snapshot.pick(host, path, hints)?;
            let Some(first) = target.instances.first() else {
                return Err(RouteMiss::NoUpstream(target.app));
            };
            let guard = self.begin(first);
            let unchanged = Arc::ptr_eq(&snapshot, &self.inner.compiled.load());
            if unchanged || attempt >= ATTEMPTS {
                return Ok((target, guard));
            }
        }
    }

    /// Counts one request in flight to `instance` until the guard drops. The instance holds
    /// its counter (resolved when the table was set), so this takes no lock.
    pub(crate) fn begin(&self, instance: &Instance) -> InFlightGuard {
        instance.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            counter: Arc::clone(&instance.in_flight),
            route: Arc::clone(&self.inner),
        }
    }

    /// The in-flight counter of the instance `id`, created at 0 on first use; kept for the
    /// handle's lifetime, so every table that names `id` shares it.
    fn counter(&self, id: &str) -> Arc<AtomicU64> {
        let existing = {
            let map = self
                .inner
                .in_flight
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(id).cloned()
        };
        match existing {
            Some(counter) => counter,
            None => {
                let mut map = self
                    .inner
                    .in_flight
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Arc::clone(map.entry(id.to_owned()).or_default())
            }
        }
    }
}

impl Compiled {
    fn new(
        table: Arc<RouteTable>,
        previous: Option<&Compiled>,
        counter: &dyn Fn(&str) -> Arc<AtomicU64>,
    ) -> Self {
        let apps = table
            .apps
            .iter()
            .map(|route| {
                let app: Arc<str> = Arc::from(route.app.as_str());
                let backends = route
                    .backends
                    .iter()
                    .map(|backend| CompiledBackend {
                        version: backend.version,
                        weight: backend.weight,
                        instances: backend
                            .instances
                            .iter()
                            // A socket address always makes a valid header value.
                            .filter_map(|upstream| {
                                let host = upstream.addr.to_string().try_into().ok()?;
                                Some(Arc::new(Instance {
                                    id: Arc::from(upstream.id.as_str()),
                                    addr: upstream.addr,
                                    host,
                                    in_flight: counter(&upstream.id),
                                }))
                            })
                            .collect(),
                        next: previous
                            .and_then(|p| p.counter_of(&route.app, backend.version))
                            .unwrap_or_default(),
                    })
                    .collect();
                CompiledApp {
                    app,
                    hosts: route.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    prefix: normalise_prefix(&route.path_prefix),
                    backends,
                    sticky: route.sticky.clone(),
                    aliases: route.aliases.clone(),
                }
            })
            .collect();
        Self { table, apps }
    }

    fn counter_of(&self, app: &str, version: u64) -> Option<Arc<AtomicUsize>> {
        self.apps
            .iter()
            .filter(|a| &*a.app == app)
            .flat_map(|a| a.backends.iter())
            .find(|b| b.version == version)
            .map(|b| Arc::clone(&b.next))
    }

    fn pick(&self, host: Option<&str>, path: &str, hints: &Hints<'_>) -> Result<Target, RouteMiss> {
        let host = host.map(strip_port);
        let mut best: Option<(&CompiledApp, usize, bool)> = None;
        for app in &self.apps {
            let host_specific = !app.hosts.is_empty();
            if host_specific {
                let Some(host) = host else { continue };
                if !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                    continue;
                }
            }
            if !prefix_matches(&app.prefix, path) {
                continue;
            }
            let len = app.prefix.len();
            let better = match best {
                None => true,
                Some((_, best_len, best_specific)) => {
                    len > best_len || (len == best_len && host_specific && !best_specific)
                }
            };
            if better {
                best = Some((app, len, host_specific));
            }
        }
        let Some((app, _, _)) = best else {
            return Err(RouteMiss::NoRoute);
        };
        let (backend, set_cookie) = app
            .steer(hints)
            .ok_or_else(|| RouteMiss::NoUpstream(Arc::clone(&app.app)))?;
        let count = backend.instances.len();
        let start = backend.next.fetch_add(1, Ordering::Relaxed) % count;
        let instances = (0..count)
            .map(|i| Arc::clone(&backend.instances[(start + i) % count]))
            .collect();
        Ok(Target {
            app: Arc::clone(&app.app),
            version: backend.version,
            set_cookie,
            instances,
        })
    }
}

impl CompiledApp {
    /// The backend for a request: the override alias's version if named and running, else the
    /// sticky assignment, else a weighted random pick. Also the cookie to set, if any.
    fn steer(&self, hints: &Hints<'_>) -> Option<(&CompiledBackend, Option<String>)> {
        if let Some(alias) = hints.alias {
            let version = self
                .aliases
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(alias.trim()))
                .map(|(_, v)| *v);
            if let Some(b) = version.and_then(|v| {
                self.backends
                    .iter()
                    .find(|b| b.version == v && !b.instances.is_empty())
            }) {
                return Some((b, None));
            }
        }
        let head = hints.head;
        match &self.sticky {
            None => self.pick_backend(None).map(|b| (b, None)),
            Some(Sticky::Cookie(name)) => {
                let assigned = head
                    .and_then(|h| cookie(h, name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .and_then(|v| {
                        self.backends
                            .iter()
                            .find(|b| b.version == v && b.weight > 0 && !b.instances.is_empty())
                    });
                match assigned {
                    Some(b) => Some((b, None)),
                    None => self.pick_backend(None).map(|b| {
                        let cookie =
                            format!("{name}={}; Path=/; HttpOnly; SameSite=Lax", b.version);
                        (b, Some(cookie))
                    }),
                }
            }
            Some(Sticky::Header(name)) => {
                let key = head.and_then(|h| h.first(name.as_str()));
                self.pick_backend(key).map(|b| (b, None))
            }
            Some(Sticky::KeyCookie(name)) => {
                let key = head.and_then(|h| cookie(h, name)).map(str::as_bytes);
                self.pick_backend(key).map(|b| (b, None))
            }
        }
    }

    /// Pick in proportion to weight among backends that can take traffic: at random, or from
    /// the hash of `key` so that the same key lands on the same backend.
    fn pick_backend(&self, key: Option<&[u8]>) -> Option<&CompiledBackend> {
        let eligible = |b: &&CompiledBackend| b.weight > 0 && !b.instances.is_empty();
        let total: u64 = self
            .backends
            .iter()
            .filter(eligible)
            .map(|b| u64::from(b.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = match key {
            // Hashed into 1000 slots, not `total`, so a key keeps its slot as weights change.
            Some(key) => stable_hash(key) % 1000 * total / 1000,
            None => random::below(total),
        };
        for backend in self.backends.iter().filter(eligible) {
            let weight = u64::from(backend.weight);
            if ticket < weight {
                return Some(backend);
            }
            ticket -= weight;
        }
        None
    }
}

/// A hash that is the same in every process of this build, so a sticky key maps to the same
/// slot across gateway restarts (std's `DefaultHasher::new` uses fixed keys).
fn stable_hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie<'h>(head: &'h RequestHead, name: &str) -> Option<&'h str> {
    head.values("cookie")
        .filter_map(field_text)
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn normalise_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        "/".to_owned()
    } else if prefix.starts_with('/') {
        prefix.to_owned()
    } else {
        format!("/{prefix}")
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(id: &str, port: u16) -> Upstream {
        Upstream {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn app(name: &str, hosts: &[&str], prefix: &str) -> AppRoute {
        AppRoute {
            app: name.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            path_prefix: prefix.to_owned(),
            backends: vec![Backend {
                version: 1,
                weight: 1000,
                instances: vec![upstream(&format!("{name}-1"), 1)],
            }],
            ..AppRoute::default()
        }
    }

    fn picked(handle: &RouteHandle, host: Option<&str>, path: &str) -> Option<String> {
        handle
            .route(host, path)
            .ok()
            .map(|(target, _)| target.app.to_string())
    }

    #[test]
    fn host_and_longest_prefix_pick_the_app() {
        let handle = RouteHandle::new(RouteTable {
            apps: vec![
                app("web", &[], "/"),
                app("api", &[], "/api"),
                app("admin", &["Admin.Example.com"], "/"),
                app("admin-api", &["admin.example.com"], "/api/v2/"),
            ],
        });
        assert_eq!(picked(&handle, None, "/").as_deref(), Some("web"));
        assert_eq!(picked(&handle, None, "/api").as_deref(), Some("api"));
        assert_eq!(picked(&handle, None, "/api/users").as_deref(), Some("api"));
        assert_eq!(picked(&handle, None, "/apix").as_deref(), Some("web"));
        assert_eq!(
            picked(&handle, Some("ADMIN.example.com:8080"), "/").as_deref(),
            Some("admin")
        );
        assert_eq!(
            picked(&handle, Some("admin.example.com"), "/api/v2/x").as_deref(),
            Some("admin-api")
        );
        assert_eq!(
            picked(&handle, Some("admin.example.com"), "/api/v1").as_deref(),
            Some("api")
        );
        assert_eq!(
            picked(&handle, Some("other.example.com"), "/api/v2/x").as_deref(),
            Some("api")
        );
    }

    #[test]
    fn no_matching_app_is_no_route() {
        let handle = RouteHandle::new(RouteTable {
            apps: vec![app("api", &["api.example.com"], "/api")],
        });
        assert!(matches!(
            handle.route(Some("api.example.com"), "/web"),
            Err(RouteMiss::NoRoute)
        ));
        assert!(matches!(
            handle.route(None, "/api"),
            Err(RouteMiss::NoRoute)
        ));
    }

    #[test]
    fn zero_weight_or_empty_backends_are_no_upstream() {
        let mut route = app("api", &[], "/");
        route.backends = vec![
            Backend {
                version: 1,
                weight: 0,
                instances: vec![upstream("a", 1)],
            },
            Backend {
                version: 2,
                weight: 1000,
                instances: vec![],
            },
        ];
        let handle = RouteHandle::new(RouteTable { apps: vec![route] });
        assert!(matches!(
            handle.route(None, "/"),
            Err(RouteMiss::NoUpstream(app)) if &*app == "api"
        ));
    }

    #[test]
    fn instances_rotate_and_list_the_others_as_fallbacks() {
        let mut route = app("api", &[], "/");
        route.backends[0].instances = vec![upstream("a", 1), upstream("b", 2), upstream("c", 3)];
        let handle = RouteHandle::new(RouteTable { apps: vec![route] });
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let (target, _guard) = handle.route(None, "/").expect("routes");
            assert_eq!(target.instances.len(), 3);
            firsts.push(target.instances[0].id.to_string());
        }
        assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn in_flight_counts_follow_guards() {
        let handle = RouteHandle::new(RouteTable {
            apps: vec![app("api", &[], "/")],
        });
        let (target, guard) = handle.route(None, "/").expect("routes");
        let second = handle.begin(&target.instances[0]);
        assert_eq!(handle.in_flight("api-1"), 2);
        // A new table naming the same instance shares its counter: requests picked from the
        // old table stay counted, and new ones add to them.
        handle.set(RouteTable {
            apps: vec![app("api", &[], "/")],
        });
        let (_, third) = handle.route(None, "/").expect("routes");
        assert_eq!(handle.in_flight("api-1"), 3);
        drop(guard);
        drop(second);
        drop(third);
        assert_eq!(handle.in_flight("api-1"), 0);
        assert_eq!(handle.in_flight("unknown"), 0);
    }

    #[tokio::test]
    async fn drain_waits_for_the_last_guard_or_times_out() {
        let handle = RouteHandle::new(RouteTable {
            apps: vec![app("api", &[], "/")],
        });
        let (_, guard) = handle.route(None, "/").expect("routes");
        // The instance leaves the table; its request is still in flight.
        handle.set(RouteTable::default());
        let ids = vec!["api-1".to_owned()];
        assert!(!handle.drain(&ids, Duration::from_millis(20)).await);
        let waiter = {
            let handle = handle.clone();
            let ids = ids.clone();
            tokio::spawn(async move { handle.drain(&ids, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        drop(guard);
        assert!(waiter.await.expect("drain task"));
    }

    #[test]
    fn strip_port_handles_names_and_ipv6() {
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
