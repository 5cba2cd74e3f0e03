//! Connection limits: streams in total and per client address
//! ([`ConnectionLimiter`]), every open TCP connection in total and per
//! peer address ([`SocketLimiter`]), and replays from history
//! ([`ReplayLimiter`], [`ReplayPace`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
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
/// let now = std::time::Duration::ZERO;
/// let first = replays.acquire(ip, now).unwrap();
/// assert!(replays.acquire(ip, now).is_err());
/// drop(first); // caught up
/// assert!(replays.acquire(ip, now).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ReplayLimiter {
    counts: ConnectionLimiter,
    max_per_ip: usize,
    pace: ReplayPace,
    starts: Option<Arc<Mutex<StartRates>>>,
    address_paces: Option<Arc<Mutex<AddressPaces>>>,
}

/// Most messages a stream replays per chunk: an address's replay burst is
/// at least this, so its pages stay whole.
pub(crate) const REPLAY_PAGE: usize = 256;

/// The replay pace of each client address: one token bucket each, shared
/// by the address's running replays, forgotten once none runs and it is
/// full again (forgetting a bucket that is not full would hand a loop of
/// short replays a fresh burst each time).
#[derive(Debug)]
struct AddressPaces {
    per_sec: u64,
    buckets: HashMap<IpAddr, Arc<Mutex<TokenBucket>>>,
}

impl AddressPaces {
    fn bucket(&mut self, ip: IpAddr, now: Duration) -> Arc<Mutex<TokenBucket>> {
        if self.buckets.len() >= MAX_START_BUCKETS && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, b| {
                let mut bucket = b.lock().unwrap_or_else(|e| e.into_inner());
                bucket.refill(now);
                Arc::strong_count(b) > 1 || !bucket.is_full()
            });
            if self.buckets.len() >= MAX_START_BUCKETS {
                // A flood from very many addresses: the server-wide pace
                // still bounds it.
                self.buckets.retain(|_, b| Arc::strong_count(b) > 1);
            }
        }
        let per_sec = self.per_sec;
        self.buckets
            .entry(ip)
            .or_insert_with(|| {
                let mut fresh =
                    TokenBucket::new(per_sec, ReplayPace::burst(per_sec, REPLAY_PAGE as u64));
                fresh.last = now;
                Arc::new(Mutex::new(fresh))
            })
            .clone()
    }
}

/// Replays started per client address: one token bucket each, forgotten
/// once full again (an address that stopped resuming holds no memory).
#[derive(Debug)]
struct StartRates {
    per_sec: u64,
    buckets: HashMap<IpAddr, TokenBucket>,
}

/// Addresses whose replay starts are remembered at once; past it, full
/// buckets are forgotten, then (a flood from very many addresses) all.
const MAX_START_BUCKETS: usize = 65_536;

impl StartRates {
    fn bucket(&mut self, ip: IpAddr, now: Duration) -> &mut TokenBucket {
        if self.buckets.len() >= MAX_START_BUCKETS && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, b| {
                b.refill(now);
                !b.is_full()
            });
            if self.buckets.len() >= MAX_START_BUCKETS {
                self.buckets.clear();
            }
        }
        let per_sec = self.per_sec;
        let bucket = self.buckets.entry(ip).or_insert_with(|| {
            let mut fresh = TokenBucket::new(per_sec, per_sec);
            fresh.last = now;
            fresh
        });
        bucket.refill(now);
        bucket
    }
}

/// One stream's place among its address's replays; dropping it (when the
/// stream turns live or ends) frees it. It carries the [`ReplayPace`] the
/// stream's replay draws from (server-wide, and its address's).
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct ReplayPermit {
    _place: ConnectionPermit,
    pace: ReplayPace,
}

impl ReplayPermit {
    /// The pace this replay draws its messages from.
    pub fn pace(&self) -> &ReplayPace {
        &self.pace
    }
}

impl ReplayLimiter {
    /// A limiter admitting at most `max_per_ip` replays per address, not
    /// paced (see [`paced`](Self::paced)).
    pub fn new(max_per_ip: usize) -> Self {
        Self {
            counts: ConnectionLimiter::new(usize::MAX, max_per_ip),
            max_per_ip,
            pace: ReplayPace::unlimited(),
            starts: None,
            address_paces: None,
        }
    }

    /// The same limiter, where all replays of one client address together
    /// send at most `per_sec` messages a second from history (bursts of a
    /// tenth of a second's worth, a replay page at least; 0: no limit),
    /// within the server-wide [`paced`](Self::paced) rate. A few clients
    /// looping "resume from the start, read a little, close" from one
    /// address then cost the server at most this rate, however many
    /// replays they start.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidings_server::limits::{ReplayLimiter, ReplayPace};
    ///
    /// let replays = ReplayLimiter::new(100)
    ///     .paced(ReplayPace::new(100_000))
    ///     .with_address_rate(1_000); // bursts of 256 (a page)
    /// let (ip, now) = ("192.0.2.1".parse().unwrap(), Duration::ZERO);
    /// let one = replays.acquire(ip, now).unwrap();
    /// let two = replays.acquire(ip, now).unwrap();
    /// assert_eq!(one.pace().take(now, 256), Ok(256));
    /// // The address's second replay shares its rate.
    /// assert!(two.pace().take(now, 256).is_err());
    /// // Another address has its own.
    /// let other = replays.acquire("192.0.2.2".parse().unwrap(), now).unwrap();
    /// assert_eq!(other.pace().take(now, 256), Ok(256));
    /// ```
    pub fn with_address_rate(mut self, per_sec: u64) -> Self {
        self.address_paces = (per_sec > 0).then(|| {
            Arc::new(Mutex::new(AddressPaces {
                per_sec,
                buckets: HashMap::new(),
            }))
        });
        self
    }

    /// The same limiter, starting at most `per_sec` replays a second per
    /// address (bursts of one second's worth; 0: no limit). See
    /// [`check_start`](Self::check_start).
    pub fn with_start_rate(mut self, per_sec: u64) -> Self {
        self.starts = (per_sec > 0).then(|| {
            Arc::new(Mutex::new(StartRates {
                per_sec,
                buckets: HashMap::new(),
            }))
        });
        self
    }

    /// Before a resume is placed: refuses it with
    /// [`ApiError::TooManyReplayStarts`] if `ip` has used up its replay
    /// starts at `now` (any clock, the same for every call), so a client
    /// that loops "resume from the start, read, close" is turned away
    /// before it costs a subscription. Takes nothing: only a resume that
    /// turns out to replay is counted ([`acquire`](Self::acquire)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidings_server::limits::ReplayLimiter;
    ///
    /// let replays = ReplayLimiter::new(100).with_start_rate(2);
    /// let ip = "192.0.2.1".parse().unwrap();
    /// let now = Duration::from_secs(10);
    /// for _ in 0..2 {
    ///     replays.check_start(ip, now).unwrap();
    ///     let _caught_up = replays.acquire(ip, now).unwrap();
    /// }
    /// assert!(replays.check_start(ip, now).is_err());
    /// // Another address, or half a second later, may start one.
    /// assert!(replays.check_start("192.0.2.2".parse().unwrap(), now).is_ok());
    /// assert!(replays.check_start(ip, now + Duration::from_millis(500)).is_ok());
    /// ```
    pub fn check_start(&self, ip: IpAddr, now: Duration) -> Result<(), ApiError> {
        let Some(starts) = &self.starts else {
            return Ok(());
        };
        let mut starts = starts.lock().unwrap_or_else(|e| e.into_inner());
        let per_sec = starts.per_sec;
        match starts.bucket(ip, now).wait_for(1) {
            None => Ok(()),
            Some(wait) => Err(ApiError::TooManyReplayStarts {
                per_sec,
                retry_after: wait.as_secs().max(1),
            }),
        }
    }

    /// The same limiter whose replays all draw from `pace`.
    pub fn paced(mut self, pace: ReplayPace) -> Self {
        self.pace = pace;
        self
    }

    /// Admits a replay for `ip` at `now`, or refuses it with
    /// [`ApiError::TooManyReplays`]; counts it among the address's replay
    /// starts (taken even from an empty bucket, which then stays empty
    /// until it refills: the next [`check_start`](Self::check_start) waits).
    pub fn acquire(&self, ip: IpAddr, now: Duration) -> Result<ReplayPermit, ApiError> {
        let place = self
            .counts
            .acquire(ip)
            .map_err(|_| ApiError::TooManyReplays {
                limit: self.max_per_ip,
            })?;
        if let Some(starts) = &self.starts {
            let mut starts = starts.lock().unwrap_or_else(|e| e.into_inner());
            starts.bucket(ip, now).spend(1);
        }
        let mut pace = self.pace.clone();
        if let Some(paces) = &self.address_paces {
            let mut paces = paces.lock().unwrap_or_else(|e| e.into_inner());
            pace.address = Some(paces.bucket(ip, now));
        }
        Ok(ReplayPermit {
            _place: place,
            pace,
        })
    }

    /// Replays running now.
    pub fn running(&self) -> usize {
        self.counts.open()
    }
}

/// The rate at which all replays together may send messages from history
/// (`--replay-rate`). Without it, a few clients that loop "resume from the
/// start, read a little, close" make the server page and write its whole
/// history into socket buffers again and again (a loopback socket takes
/// megabytes before the close shows), and live publishes wait for the CPU
/// and the broker's lock. Paced, a replay costs the server at most this
/// rate however many run; live traffic is never paced.
///
/// ```
/// use std::time::Duration;
/// use tidings_server::limits::ReplayPace;
///
/// let pace = ReplayPace::new(1_000); // messages a second, bursts of 100
/// assert_eq!(pace.take(Duration::ZERO, 64), Ok(64));
/// // 36 left: how long until a page of 64 is there.
/// assert_eq!(pace.take(Duration::ZERO, 64), Err(Duration::from_millis(28)));
/// assert_eq!(pace.take(Duration::from_millis(28), 64), Ok(64));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplayPace {
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    /// The client address's own rate, drawn from first
    /// ([`ReplayLimiter::with_address_rate`]).
    address: Option<Arc<Mutex<TokenBucket>>>,
}

impl ReplayPace {
    /// All replays together send at most `per_sec` messages a second, in
    /// bursts of at most a tenth of a second's worth (64 at least); 0 means
    /// unlimited.
    pub fn new(per_sec: u64) -> Self {
        if per_sec == 0 {
            return Self::unlimited();
        }
        Self {
            bucket: Some(Arc::new(Mutex::new(TokenBucket::new(
                per_sec,
                Self::burst(per_sec, 64),
            )))),
            address: None,
        }
    }

    /// A tenth of a second's worth, `least` at least.
    fn burst(per_sec: u64, least: u64) -> u64 {
        (per_sec / 10).max(least)
    }

    /// No pacing: every `take` gets what it asks for.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Takes a page of `want` messages' worth at `now` (any monotonic
    /// clock, the same for every call): `Ok(n)` with `n` = `want`, or a
    /// whole burst if `want` is larger (the address's or the server's,
    /// whichever is smaller); or `Err(wait)` until that much will be
    /// there. Whole pages only: a replay page costs about the same
    /// to find whatever its length, so pages of a few messages would
    /// multiply the cost of each.
    pub fn take(&self, now: Duration, want: usize) -> Result<usize, Duration> {
        let lock = |b: &Arc<Mutex<TokenBucket>>| {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(now, want as u64)
        };
        // The address's share first, then the server's for as much.
        let mine = match &self.address {
            None => want as u64,
            Some(address) => lock(address)?,
        };
        let Some(bucket) = &self.bucket else {
            return Ok(mine as usize);
        };
        let taken = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now, mine);
        let granted = *taken.as_ref().unwrap_or(&0);
        if let Some(address) = &self.address {
            give_back(address, mine - granted);
        }
        taken.map(|n| n as usize)
    }

    /// Returns what a `take` got and did not use.
    pub fn give_back(&self, unused: usize) {
        for bucket in [&self.bucket, &self.address].into_iter().flatten() {
            give_back(bucket, unused as u64);
        }
    }
}

fn give_back(bucket: &Mutex<TokenBucket>, tokens: u64) {
    if tokens > 0 {
        bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(tokens);
    }
}

/// A token bucket on a clock passed in: `per_sec` tokens a second, at most
/// `burst` saved up. Starts full. Counts millionths of a token, so any rate
/// refills exactly.
#[derive(Debug)]
struct TokenBucket {
    per_sec: u64,
    burst: u64,
    /// Tokens saved, in millionths.
    micros: u64,
    /// The clock reading of the last refill.
    last: Duration,
}

const MICROS_PER_TOKEN: u64 = 1_000_000;

impl TokenBucket {
    fn new(per_sec: u64, burst: u64) -> Self {
        Self {
            per_sec,
            burst,
            micros: burst * MICROS_PER_TOKEN,
            last: Duration::ZERO,
        }
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let elapsed = (now - self.last).as_micros().min(u128::from(u64::MAX)) as u64;
            self.micros = self
                .micros
                .saturating_add(elapsed.saturating_mul(self.per_sec))
                .min(self.burst * MICROS_PER_TOKEN);
            self.last = now;
        }
    }

    fn take(&mut self, now: Duration, want: u64) -> Result<u64, Duration> {
        self.refill(now);
        let page = want.min(self.burst);
        let needed = page * MICROS_PER_TOKEN;
        if self.micros >= needed {
            self.micros -= needed;
            return Ok(page);
        }
        let missing = needed - self.micros;
        Err(Duration::from_micros(missing.div_ceil(self.per_sec)))
    }

    fn is_full(&self) -> bool {
        self.micros >= self.burst * MICROS_PER_TOKEN
    }

    /// How long until `tokens` are there (after a refill); `None` if they are.
    fn wait_for(&self, tokens: u64) -> Option<Duration> {
        let needed = tokens.min(self.burst) * MICROS_PER_TOKEN;
        (self.micros < needed)
            .then(|| Duration::from_micros((needed - self.micros).div_ceil(self.per_sec)))
    }

    /// Takes `tokens` whatever is there (an empty bucket stays empty).
    fn spend(&mut self, tokens: u64) {
        self.micros = self
            .micros
            .saturating_sub(tokens.saturating_mul(MICROS_PER_TOKEN));
    }

    fn give_back(&mut self, tokens: u64) {
        self.micros = self
            .micros
            .saturating_add(tokens.saturating_mul(MICROS_PER_TOKEN))
            .min(self.burst * MICROS_PER_TOKEN);
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
    fn the_replay_pace_refills_at_its_rate_and_never_saves_more_than_a_burst() {
        let ms = Duration::from_millis;
        let pace = ReplayPace::new(10_000); // bursts of 1,000
        assert_eq!(pace.take(ms(0), 600), Ok(600));
        // Whole pages only: 400 left is not a page of 600.
        assert_eq!(pace.take(ms(0), 600), Err(ms(20)));
        assert_eq!(pace.take(ms(0), 400), Ok(400));
        assert_eq!(pace.take(ms(0), 64), Err(Duration::from_micros(6_400)));
        // 6.4 ms is 64 messages; what is not used comes back.
        let t = ms(6) + Duration::from_micros(400);
        assert_eq!(pace.take(t, 64), Ok(64));
        pace.give_back(60);
        assert_eq!(pace.take(t, 64), Err(Duration::from_micros(400)));
        assert_eq!(pace.take(t, 60), Ok(60));
        // An hour idle saves one burst, no more; a larger page gets the
        // burst; a clock that goes back refills nothing.
        assert_eq!(pace.take(ms(3_600_000), 5_000), Ok(1_000));
        assert!(pace.take(ms(10), 1).is_err());
        // Over a simulated second of 64-message pages, the rate holds.
        let mut sent = 0;
        let mut now = ms(3_600_000);
        let end = now + ms(1_000);
        while now < end {
            match pace.take(now, 64) {
                Ok(n) => sent += n,
                Err(wait) => now += wait,
            }
        }
        assert!((10_000 - 64..=10_000).contains(&sent), "{sent}");
        // 0 is unlimited; a rate below 64 a second still has a page's burst.
        assert_eq!(ReplayPace::new(0).take(ms(0), 1 << 20), Ok(1 << 20));
        let slow = ReplayPace::new(1);
        assert_eq!(slow.take(ms(0), 100), Ok(64));
        assert_eq!(slow.take(ms(0), 100), Err(ms(64_000)));
        assert_eq!(slow.take(ms(0), 0), Ok(0));
        assert_eq!(slow.take(ms(32_000), 32), Ok(32));
    }

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

    #[test]
    fn replay_start_rates_forget_addresses_that_stopped_resuming() {
        let replays = ReplayLimiter::new(usize::MAX).with_start_rate(1);
        let ip = |n: usize| IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let buckets = || {
            replays
                .starts
                .as_ref()
                .unwrap()
                .lock()
                .unwrap()
                .buckets
                .len()
        };
        let at = Duration::from_secs;
        for n in 0..MAX_START_BUCKETS {
            replays.check_start(ip(n), at(0)).unwrap();
            drop(replays.acquire(ip(n), at(0)).unwrap());
        }
        assert_eq!(buckets(), MAX_START_BUCKETS);
        assert!(replays.check_start(ip(7), at(0)).is_err(), "spent");
        // A second later every bucket is full again: a new address makes
        // room by forgetting them, and the forgotten ones start full.
        replays.check_start(ip(MAX_START_BUCKETS), at(1)).unwrap();
        assert_eq!(buckets(), 1);
        replays.check_start(ip(7), at(1)).unwrap();
    }
}
