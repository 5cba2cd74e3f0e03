//! Presence in one process: a map per topic, nothing expires (every entry
//! belongs to a stream of this process, which removes it when it ends).

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    time::Duration,
};

use parking_lot::Mutex;
use tidings_core::topic::Topic;

use super::store::{Cursor, Member, Page, PresenceStore};
use crate::engine::{BoxFuture, EngineError};

/// The one-process [`PresenceStore`].
#[derive(Debug, Default)]
pub struct MemoryPresence {
    topics: Mutex<HashMap<Topic, BTreeMap<Cursor, Member>>>,
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PresenceStore for MemoryPresence {
    fn add<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let mut map = self.topics.lock();
        for topic in topics {
            map.entry(topic.clone())
                .or_default()
                .insert(member.cursor(), member.clone());
        }
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Vec<bool>, EngineError>> {
        let mut map = self.topics.lock();
        let removed = topics
            .iter()
            .map(|topic| {
                let Some(members) = map.get_mut(topic) else {
                    return false;
                };
                let removed = members.remove(&member.cursor()).is_some();
                if members.is_empty() {
                    map.remove(topic);
                }
                removed
            })
            .collect();
        Box::pin(async { Ok(removed) })
    }

    fn list<'a>(
        &'a self,
        topic: &'a Topic,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, EngineError>> {
        let map = self.topics.lock();
        let page = match map.get(topic) {
            None => Page::default(),
            Some(members) => {
                let start = after.map_or(Bound::Unbounded, Bound::Excluded);
                let mut range = members.range((start, Bound::Unbounded));
                let listed: Vec<Member> =
                    range.by_ref().take(limit).map(|(_, m)| m.clone()).collect();
                let more = range.next().is_some();
                Page {
                    total: members.len(),
                    next: more.then(|| listed.last().map(Member::cursor)).flatten(),
                    members: listed,
                }
            }
        };
        Box::pin(async { Ok(page) })
    }
}
