//! Connection limits: streams in total and per client address
//! ([`ConnectionLimiter`]), and every open TCP connection in total and per
//! peer address ([`SocketLimiter`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::error::ApiError;

/// Counts open streams and refuses new ones over the limits.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted stream; dropping it frees its place.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct ConnectionPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter admitting `max_total` streams, at most `max_per_ip` per address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total,
                max_per_ip,
                counts: Mutex::default(),
            }),
        }
    }

    /// Admits a stream from `ip`, or says which limit it hit
    /// ([`ApiError::ServerFull`] or [`ApiError::TooManyFromIp`]).
    pub fn acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, ApiError> {
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.inner.max_total {
            return Err(ApiError::ServerFull {
                limit: self.inner.max_total,
            });
        }
        let per_ip = counts.per_ip.entry(ip).or_insert(0);
        if *per_ip >= self.inner.max_per_ip {
            return Err(ApiError::TooManyFromIp {
                limit: self.inner.max_per_ip,
            });
        }
        *per_ip += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.inner.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Counts streams catching up from history per client address and refuses
/// new ones over the limit ([`ApiError::TooManyReplays`]). A replay is
/// paged from history as the stream drains, so each costs little at a
/// time; the limit keeps one client from holding many cursors that chase
/// the publishers at once.
///
/// ```
/// use tidings_server::limits::ReplayLimiter;
///
/// let replays = ReplayLimiter::new(1);
/// let ip = "192.0.2.1".parse().unwrap();
/// let first = replays.acquire(ip).unwrap();
/// assert!(replays.acquire(ip).is_err());
/// drop(first); // caught up
/// assert!(replays.acquire(ip).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ReplayLimiter {
    counts: ConnectionLimiter,
    max_per_ip: usize,
}

/// One stream's place among its address's replays; dropping it (when the
/// stream turns live or ends) frees it.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct ReplayPermit {
    _place: ConnectionPermit,
}

impl ReplayLimiter {
    /// A limiter admitting at most `max_per_ip` replays per address.
    pub fn new(max_per_ip: usize) -> Self {
        Self {
            counts: ConnectionLimiter::new(usize::MAX, max_per_ip),
            max_per_ip,
        }
    }

    /// Admits a replay for `ip`, or refuses it with
    /// [`ApiError::TooManyReplays`].
    pub fn acquire(&self, ip: IpAddr) -> Result<ReplayPermit, ApiError> {
        self.counts
            .acquire(ip)
            .map(|place| ReplayPermit { _place: place })
            .map_err(|_| ApiError::TooManyReplays {
                limit: self.max_per_ip,
            })
    }

    /// Replays running now.
    pub fn running(&self) -> usize {
        self.counts.open()
    }
}

/// Descriptors kept free for everything but client connections (files,
/// Redis, NATS, the runtime).
pub const SPARE_FILES: usize = 128;

/// The largest TCP connection cap, at most `wanted`, that the process's
/// open-file limit can hold with its [`refusal_reserve`] and
/// [`SPARE_FILES`]. Raises the soft limit toward the hard one first (as
/// most servers do at start); logs a warning if `wanted` still does not fit.
pub fn fit_to_open_files(wanted: usize) -> usize {
    let needed = |cap: usize| cap + refusal_reserve(cap) + SPARE_FILES;
    let Some(available) = open_file_limit(needed(wanted)) else {
        return wanted;
    };
    if needed(wanted) <= available {
        return wanted;
    }
    let mut cap = available.saturating_sub(SPARE_FILES);
    while cap > 0 && needed(cap) > available {
        cap -= 1;
    }
    tracing::warn!(
        wanted,
        cap,
        open_files = available,
        "the open-file limit (ulimit -n) cannot hold --max-tcp-connections; lowered it. \
Raise the limit (LimitNOFILE= in a systemd unit, --ulimit nofile= in Docker) to allow more"
    );
    cap.max(1)
}

/// The soft open-file limit, raised toward `wanted` within the hard limit.
#[cfg(unix)]
fn open_file_limit(wanted: usize) -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let wanted = wanted as libc::rlim_t;
    if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit(_wanted: usize) -> Option<usize> {
    None
}

/// Refusal connections (a 429/503 answer, then close) allowed above `limit`
/// before new connections are closed at accept without an answer: 1/16 of
/// the limit, at least 2 and at most 256.
pub fn refusal_reserve(limit: usize) -> usize {
    (limit / 16).clamp(2, 256)
}

/// Counts every open TCP connection and decides at accept whether a new one
/// is served, answered with a refusal, or closed at once.
///
/// ```
/// use tidings_server::limits::{Admission, SocketLimiter};
/// let limiter = SocketLimiter::new(100, Some(1));
/// let ip = "192.0.2.1".parse().unwrap();
/// let first = limiter.admit(ip);
/// assert!(matches!(first, Admission::Serve(_)));
/// assert!(matches!(limiter.admit(ip), Admission::Refuse(..)));
/// ```
#[derive(Debug, Clone)]
pub struct SocketLimiter {
    inner: Arc<SocketInner>,
}

#[derive(Debug)]
struct SocketInner {
    max_total: usize,
    max_per_ip: Option<usize>,
    counts: Mutex<SocketCounts>,
}

#[derive(Debug, Default)]
struct SocketCounts {
    served: usize,
    refusing: usize,
    /// Per peer address: (served, refusing).
    per_ip: HashMap<IpAddr, (usize, usize)>,
}

/// What to do with a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it.
    Serve(SocketPermit),
    /// Answer its first request with this error, then close it.
    Refuse(SocketPermit, crate::error::ApiError),
    /// Close it at once: even a refusal would cost too much.
    Close,
}

/// One open TCP connection; dropping it frees its place.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct SocketPermit {
    inner: Arc<SocketInner>,
    ip: IpAddr,
    refusing: bool,
}

impl SocketLimiter {
    /// A limiter serving `max_total` connections, at most `max_per_ip` from
    /// one peer address (`None`: no per-address share, as behind a proxy).
    pub fn new(max_total: usize, max_per_ip: Option<usize>) -> Self {
        Self {
            inner: Arc::new(SocketInner {
                max_total,
                max_per_ip,
                counts: Mutex::default(),
            }),
        }
    }

    /// Decides about a new connection from `ip`.
    pub fn admit(&self, ip: IpAddr) -> Admission {
        let inner = &self.inner;
        let mut counts = inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (served, refusing) = counts.per_ip.get(&ip).copied().unwrap_or((0, 0));
        let refusal = if inner.max_per_ip.is_some_and(|max| served >= max) {
            crate::error::ApiError::TooManySocketsFromIp {
                limit: inner.max_per_ip.unwrap_or_default(),
            }
        } else if counts.served >= inner.max_total {
            crate::error::ApiError::TooManySockets {
                limit: inner.max_total,
            }
        } else {
            counts.served += 1;
            counts.per_ip.insert(ip, (served + 1, refusing));
            return Admission::Serve(self.permit(ip, false));
        };
        // Refusals take a socket and a little time each: a bounded reserve,
        // in total and per address, or the flood would take the descriptors.
        let per_ip_reserve = inner.max_per_ip.map_or(usize::MAX, refusal_reserve);
        if counts.refusing >= refusal_reserve(inner.max_total) || refusing >= per_ip_reserve {
            return Admission::Close;
        }
        counts.refusing += 1;
        counts.per_ip.insert(ip, (served, refusing + 1));
        Admission::Refuse(self.permit(ip, true), refusal)
    }

    fn permit(&self, ip: IpAddr, refusing: bool) -> SocketPermit {
        SocketPermit {
            inner: self.inner.clone(),
            ip,
            refusing,
        }
    }

    /// Open connections now (served and being refused).
    pub fn open(&self) -> usize {
        let counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.served + counts.refusing
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.refusing {
            counts.refusing -= 1;
        } else {
            counts.served -= 1;
        }
        if let Some((served, refusing)) = counts.per_ip.get_mut(&self.ip) {
            if self.refusing {
                *refusing -= 1;
            } else {
                *served -= 1;
            }
            if (*served, *refusing) == (0, 0) {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_per_ip_then_total_then_a_bounded_reserve_of_refusals() {
        let limiter = SocketLimiter::new(3, Some(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let serve = |ip| match limiter.admit(ip) {
            Admission::Serve(permit) => permit,
            other => panic!("expected to serve, got {other:?}"),
        };
        let a1 = serve(a);
        let _a2 = serve(a);
        let Admission::Refuse(r1, ApiError::TooManySocketsFromIp { limit: 2 }) = limiter.admit(a)
        else {
            panic!("per-address share")
        };
        let Admission::Refuse(_r2, _) = limiter.admit(a) else {
            panic!("second refusal of the address's reserve (2)")
        };
        assert!(matches!(limiter.admit(a), Admission::Close));
        let _b1 = serve(b);
        // The total is reached and its reserve of refusals (2) is in use.
        assert!(matches!(limiter.admit(b), Admission::Close));
        assert_eq!(limiter.open(), 5);
        drop(r1);
        let Admission::Refuse(_r3, ApiError::TooManySockets { limit: 3 }) = limiter.admit(b) else {
            panic!("total")
        };
        drop(a1);
        assert_eq!(limiter.open(), 4);
        let _a3 = serve(a);
        assert_eq!(refusal_reserve(10_000), 256);
        assert_eq!(refusal_reserve(1000), 62);
    }

    #[test]
    fn without_a_per_ip_share_only_the_total_counts() {
        let limiter = SocketLimiter::new(2, None);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let one = limiter.admit(a);
        let two = limiter.admit(a);
        assert!(matches!(
            (&one, &two),
            (Admission::Serve(_), Admission::Serve(_))
        ));
        assert!(matches!(
            limiter.admit(a),
            Admission::Refuse(_, ApiError::TooManySockets { .. })
        ));
    }

    #[test]
    fn per_ip_then_global_limit_and_release_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limiter.acquire(a).unwrap();
        let _a2 = limiter.acquire(a).unwrap();
        assert!(matches!(
            limiter.acquire(a),
            Err(ApiError::TooManyFromIp { limit: 2 })
        ));
        let _b1 = limiter.acquire(b).unwrap();
        assert!(matches!(
            limiter.acquire(b),
            Err(ApiError::ServerFull { limit: 3 })
        ));
        drop(a1);
        assert_eq!(limiter.open(), 2);
        let _a3 = limiter.acquire(a).unwrap();
    }
}
