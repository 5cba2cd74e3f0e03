//! Retained messages for replay: per topic, bounded per topic and in total.

use alloc::{
    collections::{BTreeMap, BinaryHeap, VecDeque},
    vec::Vec,
};
use core::cmp::Reverse;

use super::SharedMessage;
use crate::{
    message::ConnectionId,
    topic::{Pattern, Topic},
};

/// Bounds on what the history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per topic (0 turns history off).
    pub per_topic: usize,
    /// Payload bytes kept per topic.
    pub per_topic_bytes: usize,
    /// Messages kept across all topics.
    pub total: usize,
    /// Payload bytes kept across all topics.
    pub total_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            per_topic: 1_000,
            per_topic_bytes: 1 << 20,
            total: 100_000,
            total_bytes: 64 << 20,
        }
    }
}

#[derive(Debug)]
struct TopicHistory<M> {
    messages: VecDeque<SharedMessage<M>>,
    bytes: usize,
    /// Newest sequence number evicted from this topic: a resume before it
    /// has a gap.
    evicted_through: Option<u64>,
}

/// Per-topic message history with a global eviction order.
///
/// Topics appear when first published to and disappear when their last
/// message is evicted, so the map never holds empty topics.
#[derive(Debug)]
pub(super) struct History<M> {
    limits: HistoryLimits,
    topics: BTreeMap<Topic, TopicHistory<M>>,
    /// Every retained message's id and topic in publish order, plus slots of
    /// messages already evicted by their topic's own bound (skipped lazily;
    /// its length is still bounded by `limits.total`).
    order: VecDeque<(u64, Topic)>,
    count: usize,
    bytes: usize,
    /// Newest sequence number of a topic evicted as a whole, or declared
    /// lost: we no longer know whether a resume before it misses something.
    forgotten_through: Option<u64>,
}

impl<M> History<M> {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            topics: BTreeMap::new(),
            order: VecDeque::new(),
            count: 0,
            bytes: 0,
            forgotten_through: None,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Retains `message` and evicts what the limits no longer allow.
    pub fn push(&mut self, message: &SharedMessage<M>) {
        let limits = self.limits;
        if limits.per_topic == 0 || limits.total == 0 {
            self.note_forgotten(message.id.seq);
            return;
        }
        let weight = message.weight;
        let history = match self.topics.get_mut(message.topic.as_str()) {
            Some(history) => history,
            None => self
                .topics
                .entry(message.topic.clone())
                .or_insert_with(|| TopicHistory {
                    messages: VecDeque::new(),
                    bytes: 0,
                    evicted_through: None,
                }),
        };
        history.messages.push_back(message.clone());
        history.bytes += weight;
        self.count += 1;
        self.bytes += weight;
        while history.messages.len() > limits.per_topic
            || (history.bytes > limits.per_topic_bytes && history.messages.len() > 1)
        {
            let old = history.messages.pop_front().expect("non-empty");
            history.bytes -= old.weight;
            history.evicted_through = Some(old.id.seq);
            self.count -= 1;
            self.bytes -= old.weight;
        }
        self.order
            .push_back((message.id.seq, message.topic.clone()));
        while self.order.len() > limits.total || self.bytes > limits.total_bytes {
            let Some((id, topic)) = self.order.pop_front() else {
                break;
            };
            self.evict_front_if(id, &topic);
        }
    }

    /// Evicts the oldest message of `topic` if it is `id` (it may already
    /// be gone through the topic's own bound).
    fn evict_front_if(&mut self, seq: u64, topic: &Topic) {
        let Some(history) = self.topics.get_mut(topic.as_str()) else {
            return;
        };
        if history.messages.front().is_none_or(|m| m.id.seq != seq) {
            return;
        }
        let old = history.messages.pop_front().expect("non-empty");
        history.bytes -= old.weight;
        history.evicted_through = Some(seq);
        self.count -= 1;
        self.bytes -= old.weight;
        if history.messages.is_empty() {
            self.topics.remove(topic.as_str());
            self.note_forgotten(seq);
        }
    }

    /// Messages up to `seq` may be missing (see `Broker::forget_through`).
    pub fn forget_through(&mut self, seq: u64) {
        self.note_forgotten(seq);
    }

    fn note_forgotten(&mut self, seq: u64) {
        self.forgotten_through = Some(self.forgotten_through.map_or(seq, |f| f.max(seq)));
    }

    /// Drops everything (a new epoch starts: nothing retained can be placed
    /// in it).
    pub fn clear(&mut self) {
        self.topics.clear();
        self.order.clear();
        self.count = 0;
        self.bytes = 0;
        self.forgotten_through = None;
    }

    /// The topics' runs of retained messages after `after` on topics
    /// matched by `patterns` (each topic once), and the newest sequence
    /// number after `after` that was evicted or lost from them, if any.
    ///
    /// Costs a binary search per matched topic: nothing is copied.
    fn runs<'s>(&'s self, patterns: &[Pattern], after: u64) -> Runs<'s, M> {
        let mut gap_through = self.forgotten_through.filter(|f| *f > after);
        // (topic's messages, first index after `after`)
        let mut runs: Vec<(&'s VecDeque<SharedMessage<M>>, usize)> = Vec::new();
        let mut visit = |history: &'s TopicHistory<M>| {
            if let Some(evicted) = history.evicted_through.filter(|e| *e > after) {
                gap_through = Some(gap_through.map_or(evicted, |g| g.max(evicted)));
            }
            // Nothing new, or everything new (a resume from the start),
            // are told by one look at an end: a binary search touches
            // about ten messages, each a cache miss, on every page.
            let messages = &history.messages;
            let start = match (messages.front(), messages.back()) {
                (_, None) => return,
                (_, Some(newest)) if newest.id.seq <= after => return,
                (Some(oldest), _) if oldest.id.seq > after => 0,
                _ => messages.partition_point(|m| m.id.seq <= after),
            };
            runs.push((messages, start));
        };
        for pattern in patterns {
            if pattern.is_literal() {
                if let Some(history) = self.topics.get(pattern.as_str()) {
                    visit(history);
                }
                continue;
            }
            let prefix = pattern.literal_prefix();
            let candidates = self
                .topics
                .range::<str, _>((
                    core::ops::Bound::Included(prefix),
                    core::ops::Bound::Unbounded,
                ))
                .take_while(|(name, _)| name.as_str().starts_with(prefix));
            for (name, history) in candidates {
                if pattern.matches(name) {
                    visit(history);
                }
            }
        }
        // Overlapping patterns may find a topic twice.
        runs.sort_unstable_by_key(|(messages, _)| *messages as *const _ as usize);
        runs.dedup_by_key(|(messages, _)| *messages as *const _ as usize);
        Runs { runs, gap_through }
    }

    /// What a resume after `after` on `patterns` finds: how many retained
    /// messages follow it, and whether some that followed it are gone.
    /// Nothing is copied: the messages are paged later with
    /// [`page`](Self::page).
    pub fn survey(&self, patterns: &[Pattern], after: u64) -> Survey {
        let Runs { runs, gap_through } = self.runs(patterns, after);
        Survey {
            count: runs.iter().map(|(run, start)| run.len() - start).sum(),
            gap_through,
        }
    }

    /// Appends to `out` the next retained messages after `cursor.after` on
    /// topics matched by `cursor.patterns`, oldest first and without duplicates, at most
    /// `max_count` of them and `max_bytes` of payload (at least one).
    ///
    /// Runs under the broker's lock, so its cost is bounded by the page and
    /// the number of matched topics, not by what is retained: each matched
    /// topic's run is already in id order (found by binary search), and
    /// the runs are merged from `after` until the page is full.
    ///
    /// Messages published with `exclude` naming `cursor.skip` are passed over
    /// (at most 8 times the page's count are looked at, so a page may come
    /// back [`Page::More`] and empty).
    ///
    /// A message after the cursor (and after `told_through`, up to where a gap
    /// was already told) that is no longer retained makes the page
    /// [`Page::Lost`] and appends nothing.
    pub fn page(
        &self,
        cursor: Cursor<'_>,
        max_count: usize,
        max_bytes: usize,
        out: &mut Vec<SharedMessage<M>>,
    ) -> Page {
        let Cursor {
            patterns,
            after,
            told_through,
            skip,
        } = cursor;
        let Runs { runs, gap_through } = self.runs(patterns, after);
        if gap_through.is_some_and(|g| g > told_through) {
            return Page::Lost;
        }
        // Oldest first: a heap of each run's oldest message not taken yet.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = runs
            .iter()
            .enumerate()
            .map(|(i, (run, start))| Reverse((run[*start].id.seq, i)))
            .collect();
        let mut next: Vec<usize> = runs.iter().map(|(_, start)| *start).collect();
        let (mut count, mut bytes, mut looked) = (0, 0, 0);
        let mut last = after;
        while let Some(&Reverse((seq, i))) = heap.peek() {
            let message = &runs[i].0[next[i]];
            if count == max_count
                || (count > 0 && bytes + message.weight > max_bytes)
                || looked == max_count.saturating_mul(8)
            {
                return Page::More { last };
            }
            heap.pop();
            looked += 1;
            let excluded = skip.is_some() && message.exclude.as_deref() == skip.as_ref();
            if !excluded {
                out.push(message.clone());
                count += 1;
                bytes += message.weight;
            }
            last = seq;
            next[i] += 1;
            if let Some(following) = runs[i].0.get(next[i]) {
                heap.push(Reverse((following.id.seq, i)));
            }
        }
        Page::Done { last }
    }
}

/// Matched topics' runs after a resume point (see [`History::runs`]).
struct Runs<'s, M> {
    runs: Vec<(&'s VecDeque<SharedMessage<M>>, usize)>,
    gap_through: Option<u64>,
}

/// Where a replay stands, for [`History::page`].
pub(super) struct Cursor<'a> {
    /// What the subscription matches.
    pub patterns: &'a [Pattern],
    /// The newest sequence number already delivered (or resumed from).
    pub after: u64,
    /// Losses up to here were already told.
    pub told_through: u64,
    /// The subscription's stream, to pass over messages excluding it.
    pub skip: Option<ConnectionId>,
}

/// What a resume point finds in the history (see [`History::survey`]).
pub(super) struct Survey {
    /// Retained messages after it.
    pub count: usize,
    /// Set when messages after it were evicted or lost: the newest such
    /// sequence number (where continuity holds again).
    pub gap_through: Option<u64>,
}

/// How a [`History::page`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    /// The page is full; more messages follow `last`.
    More {
        /// Newest sequence number appended.
        last: u64,
    },
    /// Every retained message after the cursor was appended; `last` is the
    /// newest (the cursor itself if none).
    Done {
        /// Newest sequence number appended, or the cursor.
        last: u64,
    },
    /// A message after the cursor is no longer retained.
    Lost,
}
