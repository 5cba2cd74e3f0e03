//! Direct writes: a live stream's messages written to its socket by the
//! publisher, without waking the stream's task.
//!
//! A message for a stream that waits for its next message would otherwise
//! cost a task wake, a poll of the connection's future through its
//! `select!`, the body's poll and then the write. Where the stream is
//! written by the lean HTTP/1.1 writer on a plain TCP socket, the waker it
//! leaves with the broker can do the write itself: the publisher wakes the
//! streams of a publish once it holds no lock ([`wake_streams`]), and each
//! waker drains its stream's queue and writes one chunk with a
//! non-blocking `writev`, on the publisher's thread.
//!
//! A waker writes only when the stream is live and idle: nothing of the
//! task's own in flight, no replay, no write delay due, nothing left over,
//! the socket attached; and, for a publish of one message
//! ([`Writes::Calm`]), only a stream that is not busy (a busy one gets
//! more messages soon, which its task writes together). Anything else (a
//! replay, a delay, a lag, the end, a socket that does not take the whole
//! chunk) wakes the task, which carries on as it would have: a chunk the
//! socket took only part of is finished by the lean writer before anything
//! else. Woken from anywhere but [`wake_streams`] (shutdown, a loss
//! notice, the NATS follower), the waker only wakes the task.
//!
//! ```text
//!   publish ──> broker queues, collects wakers ──> wake_streams (no lock held)
//!                                                     │ per stream
//!                      idle, live, attached? ── yes ──┴─> drain + writev ──> done
//!                              │ no                          │ short write
//!                              v                             v
//!                       wake the task <──────────── tail kept for the writer
//! ```

use std::{
    cell::Cell,
    mem::MaybeUninit,
    os::fd::RawFd,
    sync::Arc,
    task::{Wake, Waker},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::{events::StreamState, watchdog::StreamSlot};

thread_local! {
    /// Set while [`wake_streams`] wakes, on its thread only.
    static WAKING: Cell<Option<Writes>> = const { Cell::new(None) };
}

/// Which waiting streams a delivery writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writes {
    /// Only calm ones: a publish brings one message, and a busy stream
    /// gets more soon, which its task writes together (the memory
    /// engine's publishes).
    Calm,
    /// Busy ones too: the delivery is a batch already (a Redis read, whose
    /// pause lets messages pile up).
    Any,
}

/// Most streams one call of [`wake_streams`] writes to itself; the rest go
/// to tasks of this many each, which the runtime's other workers can take:
/// a publish to many streams neither holds its publisher for long nor
/// leaves the other workers idle.
const WRITES_PER_TASK: usize = 256;

/// Wakes the streams a publish (or a feed) collected, writing directly to
/// those that can take it; empties `wakes`. Past [`WRITES_PER_TASK`]
/// streams, the rest go to tasks on `runtime` (the server's; the current
/// one if `None`). Call it holding no lock that a stream's poll takes (the
/// hub's are released by then).
pub(crate) fn wake_streams(wakes: &mut Vec<Waker>, writes: Writes, runtime: Option<&Handle>) {
    if wakes.len() > WRITES_PER_TASK {
        let current = Handle::try_current();
        if let Some(runtime) = runtime.or(current.as_ref().ok()) {
            while wakes.len() > WRITES_PER_TASK {
                let mut chunk = wakes.split_off(wakes.len() - WRITES_PER_TASK);
                runtime.spawn(async move { wake_here(&mut chunk, writes) });
            }
        }
    }
    wake_here(wakes, writes);
}

/// Wakes `wakes` on this thread, direct writes allowed.
fn wake_here(wakes: &mut Vec<Waker>, writes: Writes) {
    /// Clears [`WAKING`] however the loop ends: left set, a later wake
    /// under the broker's lock (shutdown's) would take that lock again.
    struct Waking;
    impl Drop for Waking {
        fn drop(&mut self) {
            WAKING.with(|w| w.set(None));
        }
    }
    if wakes.is_empty() {
        return;
    }
    WAKING.with(|w| w.set(Some(writes)));
    let _waking = Waking;
    for waker in wakes.drain(..) {
        waker.wake();
    }
}

thread_local! {
    /// A buffer for [`waking`], reused by the thread's publishes.
    static WAKES: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// Runs `collect` (a hub's `publish_deferred` or `feed_deferred`) with a
/// buffer for the streams to wake, then wakes them with [`wake_streams`]
/// (on `runtime` past the first [`WRITES_PER_TASK`]).
pub(crate) fn waking<T>(
    writes: Writes,
    runtime: Option<&Handle>,
    collect: impl FnOnce(&mut Vec<Waker>) -> T,
) -> T {
    let mut wakes = WAKES.take();
    let out = collect(&mut wakes);
    wake_streams(&mut wakes, writes, runtime);
    WAKES.set(wakes);
    out
}

/// A stream's state, shared by its body, the waker it leaves with the
/// broker and the lean writer that owns its socket.
pub(crate) struct SharedStream {
    /// `None` once the body is dropped.
    pub(super) state: Mutex<Option<StreamState>>,
    pub(super) slot: Arc<StreamSlot>,
}

impl SharedStream {
    pub(super) fn new(state: StreamState, slot: Arc<StreamSlot>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Some(state)),
            slot,
        })
    }

    /// Writes what waits, if the stream can take it now; false when the
    /// task must be woken instead.
    fn write_now(self: &Arc<Self>, writes: Writes) -> bool {
        // Held by the task's poll or by another publisher: the task runs
        // after it and finds what this waker came for.
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        let Some(state) = state.as_mut() else {
            return true; // The body is gone: nothing to write for.
        };
        let waker = Waker::from(self.clone());
        state.write_direct(&waker, &self.slot, writes)
    }
}

impl Wake for SharedStream {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(writes) = WAKING.with(Cell::get) {
            if self.write_now(writes) {
                return;
            }
        }
        self.slot.waker.wake();
    }
}

/// The lean writer's hold on a stream it writes (a response extension of
/// `GET /events`; hyper ignores it).
#[derive(Clone)]
pub(crate) struct DirectHandle(pub(super) Arc<SharedStream>);

impl DirectHandle {
    /// Lets wakers write to `fd` (a plain TCP socket) until the returned
    /// guard drops. The caller keeps the socket open while the guard lives
    /// and writes to it only what the body yields and [`take_tail`](Self::take_tail) gives.
    pub(crate) fn attach(&self, fd: RawFd) -> Attached<'_> {
        if let Some(state) = self.0.state.lock().as_mut() {
            state.socket = Some(fd);
        }
        Attached(self)
    }

    /// What a direct write left unwritten: to write before anything else.
    /// Until the writer polls the body again, the stream counts as busy
    /// (no direct write comes between the tail's bytes).
    pub(crate) fn take_tail(&self) -> Option<Bytes> {
        let mut state = self.0.state.lock();
        let state = state.as_mut()?;
        let tail = state.tail.take()?;
        state.in_flight = true;
        Some(Bytes::from(tail))
    }
}

/// Detaches the socket when dropped: waits for a direct write in progress
/// (it holds the state's lock), so none follows.
pub(crate) struct Attached<'a>(&'a DirectHandle);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0.0.state.lock().as_mut() {
            state.socket = None;
        }
    }
}

/// Most parts one [`write_parts`] call takes.
const MAX_PARTS: usize = 128;

/// Writes `parts` (at most [`MAX_PARTS`]) to the non-blocking socket `fd`
/// in one `writev`; returns what it did not take (empty when it took
/// everything).
pub(super) fn write_parts<'a>(fd: RawFd, parts: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PARTS];
    let (mut count, mut total) = (0, 0);
    for part in parts.clone() {
        assert!(count < MAX_PARTS, "too many parts for one write");
        iov[count].write(libc::iovec {
            iov_base: part.as_ptr() as *mut libc::c_void,
            iov_len: part.len(),
        });
        count += 1;
        total += part.len();
    }
    let written = loop {
        // SAFETY: the first `count` entries of `iov` are written and point
        // into `parts`, alive for the call; `fd` is open while it is
        // attached (see `DirectHandle::attach`), and the state's lock keeps
        // every other writer of it out meanwhile.
        let n = unsafe { libc::writev(fd, iov.as_ptr().cast(), count as libc::c_int) };
        if n >= 0 {
            break n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Would block, or broken: the lean writer writes it all and
            // meets the same error if there is one.
            break 0;
        }
    };
    if written >= total {
        return Vec::new();
    }
    let mut rest = Vec::with_capacity(total - written);
    let mut skip = written;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        rest.extend_from_slice(&part[skip..]);
        skip = 0;
    }
    rest
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_socket_that_takes_part_leaves_the_rest_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut reader, _) = listener.accept().unwrap();
        writer.set_nonblocking(true).unwrap();
        let fd = writer.as_raw_fd();

        let parts: [&[u8]; 4] = [b"4\r\n", b"ab", b"cd", b"\r\n"];
        assert!(write_parts(fd, parts.into_iter()).is_empty());
        let mut got = [0u8; 9];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"4\r\nabcd\r\n");

        // Fill the socket until a write is refused whole or in part: what
        // is returned is exactly the unwritten end, parts in order.
        let big = vec![7u8; 1 << 20];
        let rest = loop {
            let parts: [&[u8]; 3] = [b"head", &big, b"tail"];
            let rest = write_parts(fd, parts.into_iter());
            if !rest.is_empty() {
                break rest;
            }
        };
        assert!(rest.ends_with(b"tail"));
        assert!(rest.len() <= big.len() + 8);
    }
}
