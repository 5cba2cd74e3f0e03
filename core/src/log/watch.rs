//! The loss watch: notices entries a live feed lost when nothing after
//! them ever shows the hole.
//!
//! A per-topic chain ([`Chain::Topic`](super::Chain::Topic)) shows a lost
//! entry only when a later entry of the same topic arrives. When a topic's
//! *last* entry is lost, nothing ever does. The watch closes that hole with
//! a periodic, cheap probe of the log's head (one question per interval for
//! the whole instance, not per topic or per subscriber):
//!
//! ```text
//!   probe(now, head) ──► Idle
//!                    └─► Check { after, through, walk }
//!        the engine lists the entries of its interest in after+1 ..= through
//!        that never arrived (the walk, by arrivals or by topics) and
//!        delivers them or announces them lost, then calls `checked(through)`
//! ```
//!
//! - A head is checked only once it is `grace` old: entries stored before
//!   the probe had that long to arrive live, so the walk rarely fetches an
//!   entry that was merely in flight (one that is, is fetched and delivered
//!   all the same, and its live copy is a duplicate).
//! - Below `checked`, every entry of the interest was delivered or
//!   announced lost. The walk starts there and skips what was
//!   [`seen`](LossWatch::seen) live, so a lost entry is found even when
//!   entries of other topics were delivered after it
//!   ([`Walk::Arrivals`]).
//! - Remembering what was seen is bounded (`budget` sequence numbers).
//!   Past it the watch is blind to arrivals up to a watermark, and a check
//!   that reaches below it asks for [`Walk::Topics`] instead: for each
//!   topic of the interest that the log holds, look after the newest entry
//!   its chain accounted for. A topic's chain accounts for every entry up
//!   to its newest one (a hole in it shows when the next one arrives), so
//!   only entries after a topic's newest can be lost unseen, and one
//!   question per topic finds them, however many entries arrived.
//!
//! - A check's cost grows with the interest (the engine walks each
//!   subscribed pattern), so checks can be spaced out
//!   ([`set_spacing`](LossWatch::set_spacing)): a large interest is checked
//!   less often, at a bounded rate of work.
//!
//! The watch never reads a clock or a socket: time and the head are passed
//! in.

use alloc::collections::BTreeSet;

/// How a check tells what arrived from what did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Every entry of the interest in the range that was not
    /// [`seen`](LossWatch::seen) is missing (cost: one look per entry of
    /// the interest in the range).
    Arrivals,
    /// What arrived in the range is not all known (more than the budget
    /// arrived): for each topic of the interest the log holds, its entries
    /// in the range after the newest one its chain accounted for are
    /// missing (cost: one look per topic, plus one per missing entry).
    Topics,
}

/// What to do after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Probe {
    /// Nothing to check now.
    Idle,
    /// List the entries of this instance's interest with a sequence number
    /// in `after + 1 ..= through` that never arrived, as `walk` says.
    /// Deliver those after the position, announce the others lost (they
    /// can no longer be delivered in order), then call
    /// [`checked`](LossWatch::checked)`(through)`.
    Check {
        /// Every entry of the interest at or below it is accounted for.
        after: u64,
        /// The head probed at least `grace` ago.
        through: u64,
        /// How to tell what did not arrive.
        walk: Walk,
    },
}

/// The loss watch's state. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LossWatch {
    grace_us: u64,
    budget: usize,
    checked: u64,
    /// The oldest head not yet checked, and when it was probed.
    pending: Option<(u64, u64)>,
    /// Sequence numbers above `checked` that arrived (complete above
    /// `blind_through`, while not `blind`).
    seen: BTreeSet<u64>,
    /// More arrived than `budget`: arrivals are not recorded until the
    /// next check is asked for.
    blind: bool,
    /// The highest sequence number that arrived unrecorded: a check
    /// reaching below it walks by topics.
    blind_through: u64,
    /// Least time between two checks.
    spacing_us: u64,
    /// When the last check was asked for.
    last_check_us: Option<u64>,
}

impl LossWatch {
    /// A watch for a feed that starts after `start` (entries at or before
    /// it are not this instance's to check). A head is checked once it is
    /// `grace_us` old; at most `budget` sequence numbers seen are
    /// remembered between two checks.
    pub fn new(start: u64, grace_us: u64, budget: usize) -> Self {
        Self {
            grace_us,
            budget,
            checked: start,
            pending: None,
            seen: BTreeSet::new(),
            blind: false,
            blind_through: 0,
            spacing_us: 0,
            last_check_us: None,
        }
    }

    /// Asks for at least `spacing_us` between two checks (0: a check as
    /// soon as a head is `grace` old). An engine whose check costs one
    /// request per subscribed pattern sets it in proportion to their
    /// number, which bounds its rate of requests.
    pub fn set_spacing(&mut self, spacing_us: u64) {
        self.spacing_us = spacing_us;
    }

    /// Every entry of the interest at or below this is accounted for.
    pub fn checked_through(&self) -> u64 {
        self.checked
    }

    /// Records that the entry `seq` arrived (live, or fetched by the
    /// engine and fed).
    pub fn saw(&mut self, seq: u64) {
        if seq <= self.checked {
            return;
        }
        if self.blind || self.seen.len() >= self.budget {
            // Past the budget: remember only how far the blindness reaches.
            // What was recorded is forgotten too.
            let recorded = self.seen.last().copied().unwrap_or(0);
            self.blind = true;
            self.blind_through = self.blind_through.max(seq).max(recorded);
            self.seen.clear();
        } else {
            self.seen.insert(seq);
        }
    }

    /// Whether the entry `seq` (above the check's `after`) arrived, for a
    /// [`Walk::Arrivals`] check.
    pub fn seen(&self, seq: u64) -> bool {
        seq <= self.checked || self.seen.contains(&seq)
    }

    /// Judges one probe of the log's head at `now_us`.
    pub fn probe(&mut self, now_us: u64, head: u64) -> Probe {
        let spaced = self
            .last_check_us
            .is_none_or(|last| now_us >= last.saturating_add(self.spacing_us));
        let due = match self.pending {
            Some((through, at)) if spaced && now_us >= at.saturating_add(self.grace_us) => {
                Some(through)
            }
            _ => None,
        };
        if let Some(through) = due {
            self.pending = None;
            if head > through {
                self.pending = Some((head, now_us));
            }
            if through > self.checked {
                self.last_check_us = Some(now_us);
                let walk = if self.blind_through > self.checked {
                    Walk::Topics
                } else {
                    Walk::Arrivals
                };
                // Record arrivals again from here: whatever arrived
                // unrecorded is at or below `blind_through`, and every
                // check reaching below it walks by topics.
                self.blind = false;
                return Probe::Check {
                    after: self.checked,
                    through,
                    walk,
                };
            }
        }
        if head > self.checked && self.pending.is_none() {
            self.pending = Some((head, now_us));
        }
        Probe::Idle
    }

    /// The engine delivered or announced every entry a
    /// [`Probe::Check`] asked for, through `through`.
    pub fn checked(&mut self, through: u64) {
        if through > self.checked {
            self.checked = through;
            self.seen = self.seen.split_off(&(through + 1));
        }
    }

    /// Starts over after `start` (a new epoch: sequence numbers restart).
    pub fn restart(&mut self, start: u64) {
        let spacing_us = self.spacing_us;
        *self = Self::new(start, self.grace_us, self.budget);
        self.spacing_us = spacing_us;
    }
}
