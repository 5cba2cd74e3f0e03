//! Live fan-out by interest: the instance holds core subscriptions on the
//! republished subjects its streams need, never one per client and never
//! everything. The follower (`follow.rs`) owns them; this is the rule for
//! which ones.

use tidings_core::topic::Pattern;

/// The patterns of `interest` not covered by another one (each once).
pub fn minimal_cover(interest: &[Pattern]) -> Vec<Pattern> {
    let mut unique: Vec<Pattern> = interest.to_vec();
    unique.sort();
    unique.dedup();
    unique
        .iter()
        .filter(|p| !unique.iter().any(|q| q != *p && q.covers(p)))
        .cloned()
        .collect()
}
