//! Helpers for the NATS-mode tests: a private 3-node JetStream cluster
//! ([`cluster`]) and clients for it.
#![allow(dead_code)]

pub mod cluster;

#[path = "../support/wait.rs"]
mod wait;
#[allow(unused_imports)] // each test binary uses its own subset
pub use wait::{PATIENCE, eventually, patiently};

#[allow(unused_imports)]
pub use cluster::{NatsCluster, unique_name};

/// A client of `urls` (comma-separated) that retries its first connect.
pub async fn connect(urls: &str) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.parse().expect("a NATS URL"))
        .collect();
    patiently(
        "a NATS connection",
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs),
    )
    .await
    .expect("connect to the test cluster")
}
