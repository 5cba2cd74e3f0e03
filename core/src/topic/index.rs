//! A trie on topic segments that finds the subscriptions matching a topic
//! without looking at the ones that do not.

use alloc::{boxed::Box, collections::BTreeMap};
use slab::Slab;

use super::{Pattern, Segment};

type NodeId = usize;
const ROOT: NodeId = 0;

/// Where a value sits in a [`PatternIndex`]; give it back to
/// [`PatternIndex::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the entry is needed to remove the value again"]
pub struct IndexEntry {
    node: NodeId,
    tail: bool,
    slot: usize,
}

#[derive(Debug)]
struct Node<V> {
    /// Edge label from the parent, to unlink the node when it empties.
    parent: Option<(NodeId, Edge)>,
    children: BTreeMap<Box<str>, NodeId>,
    star: Option<NodeId>,
    /// Patterns that end at this node.
    exact: Slab<V>,
    /// Patterns that end with `>` right below this node.
    tail: Slab<V>,
}

#[derive(Debug)]
enum Edge {
    Literal(Box<str>),
    Star,
}

impl<V> Node<V> {
    fn new(parent: Option<(NodeId, Edge)>) -> Self {
        Self {
            parent,
            children: BTreeMap::new(),
            star: None,
            exact: Slab::new(),
            tail: Slab::new(),
        }
    }

    fn is_unused(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.exact.is_empty()
            && self.tail.is_empty()
    }
}

/// Values keyed by [`Pattern`], looked up by topic.
///
/// Lookup walks one path per wildcard branch that can still match, so its
/// cost grows with the topic's depth and the number of matches, not with the
/// number of patterns stored. Emptied branches are pruned on removal.
///
/// ```
/// use tidings_core::topic::{Pattern, PatternIndex};
///
/// let mut index = PatternIndex::new();
/// let a = index.insert(&Pattern::new("order:*:42")?, "a");
/// index.insert(&Pattern::new("order:>")?, "b");
/// index.insert(&Pattern::new("news")?, "c");
///
/// let mut found = Vec::new();
/// index.for_each_match("order:acme:42", |v| found.push(*v));
/// found.sort();
/// assert_eq!(found, ["a", "b"]);
///
/// assert_eq!(index.remove(a), Some("a"));
/// # Ok::<(), tidings_core::topic::TopicError>(())
/// ```
#[derive(Debug)]
pub struct PatternIndex<V> {
    nodes: Slab<Node<V>>,
    len: usize,
}

impl<V> Default for PatternIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> PatternIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        let mut nodes = Slab::new();
        let root = nodes.insert(Node::new(None));
        debug_assert_eq!(root, ROOT);
        Self { nodes, len: 0 }
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of trie nodes, root included (to check that nothing leaks).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Stores `value` under `pattern`. The same pattern may hold many values.
    pub fn insert(&mut self, pattern: &Pattern, value: V) -> IndexEntry {
        let mut node = ROOT;
        for segment in pattern.segments() {
            match segment {
                Segment::Tail => {
                    let slot = self.nodes[node].tail.insert(value);
                    self.len += 1;
                    return IndexEntry {
                        node,
                        tail: true,
                        slot,
                    };
                }
                Segment::Star => {
                    node = match self.nodes[node].star {
                        Some(child) => child,
                        None => {
                            let child = self.nodes.insert(Node::new(Some((node, Edge::Star))));
                            self.nodes[node].star = Some(child);
                            child
                        }
                    }
                }
                Segment::Literal(name) => {
                    node = match self.nodes[node].children.get(name) {
                        Some(&child) => child,
                        None => {
                            let child = self
                                .nodes
                                .insert(Node::new(Some((node, Edge::Literal(name.into())))));
                            self.nodes[node].children.insert(name.into(), child);
                            child
                        }
                    }
                }
            }
        }
        let slot = self.nodes[node].exact.insert(value);
        self.len += 1;
        IndexEntry {
            node,
            tail: false,
            slot,
        }
    }

    /// Removes the value at `entry`, pruning branches left empty. Returns
    /// `None` if the entry was already removed.
    pub fn remove(&mut self, entry: IndexEntry) -> Option<V> {
        let node = self.nodes.get_mut(entry.node)?;
        let slots = if entry.tail {
            &mut node.tail
        } else {
            &mut node.exact
        };
        let value = slots.try_remove(entry.slot)?;
        if slots.is_empty() {
            // Give back the memory of a crowd that has left.
            slots.shrink_to_fit();
        }
        self.len -= 1;
        self.prune(entry.node);
        Some(value)
    }

    fn prune(&mut self, mut node: NodeId) {
        while node != ROOT && self.nodes[node].is_unused() {
            let removed = self.nodes.remove(node);
            let Some((parent, edge)) = removed.parent else {
                break;
            };
            match edge {
                Edge::Star => self.nodes[parent].star = None,
                Edge::Literal(name) => {
                    self.nodes[parent].children.remove(&name);
                }
            }
            node = parent;
        }
    }

    /// Calls `f` with every value whose pattern matches `topic` (a valid
    /// topic name). A value stored under two matching patterns is seen twice.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        if super::is_internal(topic) {
            // Server-owned topics: no first-segment wildcard (see the
            // topic module docs), so only the literal child of the root.
            let (segment, after) = match topic.split_once(':') {
                Some((segment, after)) => (segment, Some(after)),
                None => (topic, None),
            };
            if let Some(&child) = self.nodes[ROOT].children.get(segment) {
                self.visit(child, after, &mut f);
            }
            return;
        }
        self.visit(ROOT, Some(topic), &mut f);
    }

    fn visit(&self, node: NodeId, rest: Option<&str>, f: &mut impl FnMut(&V)) {
        let node = &self.nodes[node];
        let Some(rest) = rest else {
            node.exact.iter().for_each(|(_, v)| f(v));
            return;
        };
        node.tail.iter().for_each(|(_, v)| f(v));
        let (segment, after) = match rest.split_once(':') {
            Some((segment, after)) => (segment, Some(after)),
            None => (rest, None),
        };
        if let Some(&child) = node.children.get(segment) {
            self.visit(child, after, f);
        }
        if let Some(child) = node.star {
            self.visit(child, after, f);
        }
    }

    /// Iterates over every stored value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.nodes
            .iter()
            .flat_map(|(_, n)| n.exact.iter().chain(n.tail.iter()).map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    fn matches(index: &PatternIndex<u32>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.for_each_match(topic, |v| out.push(*v));
        out.sort_unstable();
        out
    }

    #[test]
    fn agrees_with_pattern_matches() {
        let patterns = [
            "a", "a:b", "a:*", "a:>", "*", ">", "*:b", "*:*", "a:b:c", "a:*:c", "*:>", "b:>",
            "a:b:>", "$p", "$p:a", "$p:*", "$p:>", "$q:>",
        ];
        let topics = [
            "a", "b", "a:b", "a:c", "b:b", "a:b:c", "a:x:c", "a:b:c:d", "x:y:z", "$p", "$p:a",
            "$p:a:b",
        ];
        let mut index = PatternIndex::new();
        for (i, pat) in patterns.iter().enumerate() {
            let _ = index.insert(&p(pat), i as u32);
        }
        for topic in topics {
            let expected: Vec<u32> = (0..patterns.len() as u32)
                .filter(|&i| p(patterns[i as usize]).matches_str(topic))
                .collect();
            assert_eq!(matches(&index, topic), expected, "topic {topic}");
        }
        // Server-owned topics: only the `$p` patterns (13..=16) see them.
        assert_eq!(matches(&index, "$p:a"), [14, 15, 16]);
        assert_eq!(matches(&index, "$p"), [13]);
        assert!(!p(">").covers(&p("$p:>")) && p("$p:>").covers(&p("$p:a")));
    }

    #[test]
    fn removing_everything_leaves_only_the_root() {
        let mut index = PatternIndex::new();
        let entries: Vec<_> = ["a:b:c", "a:*:c", "a:>", "x", "a:b:c"]
            .iter()
            .enumerate()
            .map(|(i, s)| index.insert(&p(s), i as u32))
            .collect();
        assert!(index.node_count() > 1);
        for entry in entries.iter().rev() {
            assert!(index.remove(*entry).is_some());
        }
        assert_eq!(index.remove(entries[0]), None, "second removal is a no-op");
        assert_eq!(index.len(), 0);
        assert_eq!(index.node_count(), 1);
        assert!(matches(&index, "a:b:c").is_empty());
    }

    #[test]
    fn removal_keeps_siblings() {
        let mut index = PatternIndex::new();
        let a = index.insert(&p("a:b"), 1);
        let _b = index.insert(&p("a:b:c"), 2);
        assert_eq!(index.remove(a), Some(1));
        assert_eq!(matches(&index, "a:b:c"), [2]);
        assert!(matches(&index, "a:b").is_empty());
    }
}
