//! The follower: decides, from what an engine reports, whether an instance
//! can prove it missed nothing.
//!
//! ```text
//!   entry (epoch, seq, chain)          engine state after a (re)connect
//!            │                                     │
//!            ▼                                     ▼
//!   Follower::observe ──► Verdict       Follower::resync ──► Resync
//!     Deliver      in order                 Continue   read after our position
//!     Duplicate    seen already             Lost       entries after us are gone
//!     Stale        of a retired epoch       NewEpoch   the log started over
//!     Missing      chain broken: fetch      WentBack   the log has less than we
//!     AfterLoss    skipped entries: gap                saw: start a new epoch
//!     NewEpoch     the log started over
//! ```
//!
//! The follower never reads a clock or a socket. It compares what it is
//! told with where the local broker stands (its [`MessageId`] position,
//! passed in) and keeps only what the broker does not: epochs it has left,
//! per-chain positions, and the newest sequence number this instance
//! acknowledged to a publisher.

use alloc::collections::{BTreeMap, VecDeque};

use crate::{
    message::{Epoch, MessageId},
    topic::Topic,
};

/// Retired epochs remembered, to tell a late entry of an old epoch from
/// the first entry of a new one.
const RETIRED_EPOCHS: usize = 8;

/// Where an entry sits in the log, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain<'a> {
    /// The whole log is one chain: sequence numbers follow each other
    /// (Redis, memory). The entry before `seq` is `seq - 1`.
    Log,
    /// Each topic is its own chain (JetStream subjects): `prev` is the
    /// sequence number of the previous entry on `topic` (0 if none).
    Topic {
        /// The entry's topic.
        topic: &'a Topic,
        /// The previous entry's sequence number on that topic.
        prev: u64,
        /// Where this instance's interest in `topic` began: entries at or
        /// below it were not this instance's to deliver. When the entry
        /// starts the topic's chain here and `prev` is above it, the
        /// entries in between were missed ([`Verdict::Missing`]);
        /// `u64::MAX` when the engine does not know (the entry then starts
        /// the chain as it is).
        floor: u64,
    },
}

/// What to do with one entry. Apply the effect to the broker, then (for
/// `Deliver`, `AfterLoss` and `NewEpoch`) publish the entry at its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Next in order: deliver it.
    Deliver,
    /// Already delivered: skip it.
    Duplicate,
    /// From an epoch this instance has left: skip it.
    Stale,
    /// The topic's chain is broken: entries `after + 1 ..= prev` of this
    /// topic were not seen. Fetch them from the engine and observe them
    /// first; if the engine no longer has them, call
    /// [`Follower::give_up`].
    Missing {
        /// Last sequence number seen on the chain (its floor when the
        /// entry starts it).
        after: u64,
        /// Previous entry of the observed one on its chain.
        prev: u64,
    },
    /// Entries up to `through` were skipped and cannot be had: announce the
    /// loss (`tidings.gap` to live streams, a floor for resumes), then
    /// deliver.
    AfterLoss {
        /// Newest sequence number that may be missing.
        through: u64,
    },
    /// The log started a new epoch: begin it in the broker (which tells
    /// every live stream), with `floor` (entries at or before it were not
    /// seen), then deliver.
    NewEpoch {
        /// The new epoch.
        epoch: Epoch,
        /// Sequence number before the first entry seen of it.
        floor: u64,
    },
}

/// What an engine reports about its log after a (re)connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// The log's epoch now.
    pub epoch: Epoch,
    /// Newest sequence number it has produced (0 if none).
    pub head: u64,
    /// Oldest sequence number it still holds, if it holds any.
    pub oldest: Option<u64>,
}

/// What publishers had been told when a resync began (see
/// [`Follower::ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct ResyncTicket {
    acked: Option<MessageId>,
}

/// What to do after a (re)connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Resync {
    /// Nothing was lost: read after the broker's position.
    Continue,
    /// Entries after the broker's position up to `through` are gone from
    /// the log: announce the loss, then read what remains.
    Lost {
        /// Newest sequence number lost.
        through: u64,
    },
    /// The log is in a new epoch: begin it in the broker with `floor`, then
    /// read it from its oldest entry.
    NewEpoch {
        /// The new epoch.
        epoch: Epoch,
        /// Sequence number before the oldest entry the log holds.
        floor: u64,
    },
    /// The log holds less than this instance saw or acknowledged (it came
    /// back from an older copy): sequence numbers would be reused for other
    /// messages. Make the engine start a new epoch, then resync again.
    WentBack {
        /// The log's head.
        head: u64,
        /// What this instance saw or acknowledged.
        seen: u64,
    },
}

/// The follower's state. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Follower {
    retired: VecDeque<Epoch>,
    chains: BTreeMap<Topic, u64>,
    /// Newest sequence number of the current epoch that this instance told
    /// a publisher was accepted.
    acked: Option<MessageId>,
}

impl Follower {
    /// A follower with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that this instance told a publisher `id` was accepted: if
    /// the log later holds less, it went back.
    pub fn note_acked(&mut self, id: MessageId) {
        match self.acked {
            Some(acked) if acked.epoch == id.epoch && acked.seq >= id.seq => {}
            _ => self.acked = Some(id),
        }
    }

    /// Judges one entry read from the log. `position` is where the local
    /// broker stands.
    pub fn observe(
        &mut self,
        position: MessageId,
        epoch: Epoch,
        seq: u64,
        chain: Chain<'_>,
    ) -> Verdict {
        if epoch != position.epoch {
            if self.retired.contains(&epoch) {
                return Verdict::Stale;
            }
            self.retire(position.epoch);
            self.chains.clear();
            if let Chain::Topic { topic, .. } = chain {
                self.chains.insert(topic.clone(), seq);
            }
            let floor = match chain {
                Chain::Log => seq.saturating_sub(1),
                Chain::Topic { prev, .. } => prev,
            };
            return Verdict::NewEpoch { epoch, floor };
        }
        if seq <= position.seq {
            return Verdict::Duplicate;
        }
        match chain {
            Chain::Log if seq == position.seq + 1 => Verdict::Deliver,
            Chain::Log => Verdict::AfterLoss { through: seq - 1 },
            Chain::Topic { topic, prev, floor } => {
                let after = self.chains.get(topic.as_str()).copied();
                match after {
                    // First entry of a chain this instance did not follow:
                    // nobody here was entitled to what came before it,
                    // unless that is after the interest began.
                    None if prev > floor => return Verdict::Missing { after: floor, prev },
                    None => {}
                    Some(after) if prev == after => {}
                    Some(after) if prev < after => return Verdict::Duplicate,
                    Some(after) => return Verdict::Missing { after, prev },
                }
                self.chains.insert(topic.clone(), seq);
                Verdict::Deliver
            }
        }
    }

    /// The engine no longer has the entries a [`Verdict::Missing`] asked
    /// for: announce the loss through `prev` and go on.
    pub fn give_up(&mut self, topic: &Topic, prev: u64) -> Verdict {
        self.chains.insert(topic.clone(), prev);
        Verdict::AfterLoss { through: prev }
    }

    /// The newest sequence number seen on `topic`'s chain, if this
    /// instance follows it.
    pub fn chain(&self, topic: &Topic) -> Option<u64> {
        self.chains.get(topic.as_str()).copied()
    }

    /// Stops following a topic's chain (no stream here needs it any more);
    /// its next entry starts it again.
    pub fn forget_chain(&mut self, topic: &Topic) {
        self.chains.remove(topic.as_str());
    }

    /// Takes note of what publishers were told before the log's state is
    /// asked for. Pass it to [`resync`](Self::resync) with that state: a
    /// publish acknowledged after the question may be newer than the answer
    /// and must not count as lost.
    pub fn ticket(&self) -> ResyncTicket {
        ResyncTicket { acked: self.acked }
    }

    /// Keeps only the per-topic chains whose topic `keep` accepts.
    pub fn retain_chains(&mut self, mut keep: impl FnMut(&Topic) -> bool) {
        self.chains.retain(|topic, _| keep(topic));
    }

    /// Judges the log's state after a (re)connect. `position` is where the
    /// local broker stands; `ticket` was taken before `log` was asked for.
    pub fn resync(&mut self, position: MessageId, log: LogState, ticket: ResyncTicket) -> Resync {
        if log.epoch != position.epoch {
            self.retire(position.epoch);
            self.chains.clear();
            return Resync::NewEpoch {
                epoch: log.epoch,
                floor: log
                    .oldest
                    .map_or(log.head, |oldest| oldest.saturating_sub(1)),
            };
        }
        let acked = ticket
            .acked
            .filter(|a| a.epoch == position.epoch)
            .map_or(0, |a| a.seq);
        let seen = position.seq.max(acked);
        if log.head < seen {
            return Resync::WentBack {
                head: log.head,
                seen,
            };
        }
        match log.oldest {
            // The next entry we need is gone; what remains starts later.
            Some(oldest) if oldest > position.seq + 1 => Resync::Lost {
                through: oldest - 1,
            },
            // Nothing left at all, but entries after us were produced.
            None if log.head > position.seq => Resync::Lost { through: log.head },
            _ => Resync::Continue,
        }
    }

    fn retire(&mut self, epoch: Epoch) {
        if !self.retired.contains(&epoch) {
            if self.retired.len() == RETIRED_EPOCHS {
                self.retired.pop_front();
            }
            self.retired.push_back(epoch);
        }
    }
}
