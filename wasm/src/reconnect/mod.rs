//! Sans-IO reconnection logic: backoff, resume and the connection state
//! machine. Nothing here touches web-sys, a clock or a timer: the browser
//! adapter passes time in (milliseconds) and randomness through [`Jitter`], so
//! every rule is unit-tested on the host with `cargo test -p tidings-wasm`.

mod backoff;
mod presence_url;
mod resume;
mod session;
mod url;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use presence_url::presence_url;
pub use resume::{Resume, Verdict};
pub use session::{AuthReason, Decision, Failure, Session, State};
pub(crate) use url::encode_component;
pub use url::subscribe_url;
