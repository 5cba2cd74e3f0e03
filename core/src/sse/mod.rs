//! Server-Sent Events: frame encoder and incremental decoder (WHATWG rules).
