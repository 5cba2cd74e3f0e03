//! Tidings server (work in progress).
