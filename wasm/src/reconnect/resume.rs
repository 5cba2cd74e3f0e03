//! Where to resume and which events were already delivered.

use alloc::collections::VecDeque;
use alloc::string::String;

/// How many recent ids are remembered to drop duplicates. A resume replays
/// only what came after the id we sent, so duplicates can only come from the
/// last few events before a reconnect (or a replay racing a live publish).
const RECENT_IDS: usize = 256;

/// Whether an event should reach the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// First time this id is seen (or the event has no id): deliver it.
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
}

/// The last event id (sent on every reconnect) and a window of recent ids.
///
/// ```
/// use tidings_wasm::reconnect::{Resume, Verdict};
/// let mut resume = Resume::default();
/// assert_eq!(resume.accept(Some("7")), Verdict::Deliver);
/// assert_eq!(resume.accept(Some("7")), Verdict::Duplicate);
/// assert_eq!(resume.last_event_id(), Some("7"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Resume {
    last_event_id: Option<String>,
    recent: VecDeque<String>,
}

impl Resume {
    /// Starts from an id the app kept (for example across a page reload).
    pub fn starting_after(last_event_id: Option<String>) -> Self {
        let mut resume = Self::default();
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            resume.remember(&id);
            resume.last_event_id = Some(id);
        }
        resume
    }

    /// The id to resume after, if any event carried one.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Records an event's id and says whether to deliver it. Ids are opaque
    /// (no order can be assumed), so duplicates are recognised by equality
    /// with one of the last [`RECENT_IDS`] ids.
    pub fn accept(&mut self, id: Option<&str>) -> Verdict {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return Verdict::Deliver;
        };
        if self.recent.iter().any(|seen| seen == id) {
            return Verdict::Duplicate;
        }
        self.remember(id);
        self.last_event_id = Some(id.into());
        Verdict::Deliver
    }

    /// Takes the id of one of the server's own events (`tidings.connected`,
    /// `tidings.gap`, ...) as the resume point. Such events are never
    /// dropped: their id may repeat the one the client resumed from.
    pub fn advance(&mut self, id: Option<&str>) {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return;
        };
        if !self.recent.iter().any(|seen| seen == id) {
            self.remember(id);
        }
        self.last_event_id = Some(id.into());
    }

    fn remember(&mut self, id: &str) {
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(id.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn events_without_id_are_delivered_and_keep_the_resume_point() {
        let mut r = Resume::default();
        assert_eq!(r.accept(Some("a")), Verdict::Deliver);
        assert_eq!(r.accept(None), Verdict::Deliver);
        assert_eq!(r.accept(Some("")), Verdict::Deliver);
        assert_eq!(r.last_event_id(), Some("a"));
    }

    #[test]
    fn a_replay_overlapping_what_was_seen_delivers_each_id_once() {
        let mut r = Resume::default();
        let first: Vec<Verdict> = ["1", "2", "3"]
            .iter()
            .map(|id| r.accept(Some(id)))
            .collect();
        assert!(first.iter().all(|v| *v == Verdict::Deliver));
        // The server replays from "2" (say a publish raced the resume).
        let replay: Vec<Verdict> = ["2", "3", "4"]
            .iter()
            .map(|id| r.accept(Some(id)))
            .collect();
        assert_eq!(
            replay,
            [Verdict::Duplicate, Verdict::Duplicate, Verdict::Deliver]
        );
        assert_eq!(r.last_event_id(), Some("4"));
    }

    #[test]
    fn control_event_ids_move_the_resume_point_without_dropping_anything() {
        let mut r = Resume::starting_after(Some("5".into()));
        // `tidings.connected` repeating the resume id: still the resume point.
        r.advance(Some("5"));
        assert_eq!(r.last_event_id(), Some("5"));
        // A fresh stream's first frame: its id is where to resume from.
        let mut fresh = Resume::default();
        fresh.advance(Some("e1-10"));
        assert_eq!(fresh.last_event_id(), Some("e1-10"));
        fresh.advance(None);
        fresh.advance(Some(""));
        assert_eq!(fresh.last_event_id(), Some("e1-10"));
        assert_eq!(fresh.accept(Some("e1-11")), Verdict::Deliver);
        // `tidings.gap` names a new position: later resumes start there.
        fresh.advance(Some("e2-3"));
        assert_eq!(fresh.last_event_id(), Some("e2-3"));
        assert_eq!(fresh.recent.len(), 3);
    }

    #[test]
    fn the_window_is_bounded() {
        let mut r = Resume::default();
        for n in 0..(RECENT_IDS + 10) {
            assert_eq!(r.accept(Some(&format!("{n}"))), Verdict::Deliver);
        }
        assert_eq!(r.recent.len(), RECENT_IDS);
        // The oldest ids fell out of the window; the newest are still known.
        assert_eq!(r.accept(Some("0")), Verdict::Deliver);
        assert_eq!(
            r.accept(Some(&format!("{}", RECENT_IDS + 9))),
            Verdict::Duplicate
        );
    }

    #[test]
    fn starting_after_a_kept_id_resumes_there_and_drops_it_if_replayed() {
        let mut r = Resume::starting_after(Some("41".into()));
        assert_eq!(r.last_event_id(), Some("41"));
        assert_eq!(r.accept(Some("41")), Verdict::Duplicate);
        assert_eq!(r.accept(Some("42")), Verdict::Deliver);
        assert_eq!(
            Resume::starting_after(Some(String::new())).last_event_id(),
            None
        );
    }
}
