//! Tidings browser client (work in progress).
