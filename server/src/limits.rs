//! Connection limits: streams in total and per client address.

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

#[cfg(test)]
mod tests {
    use super::*;

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
