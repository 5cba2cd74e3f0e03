//! The loss watch on virtual time: a model of a shared log with topics, an
//! instance that receives only some of its entries live (the others are
//! "lost on the wire"), per-topic chains that notice a hole when a later
//! entry of the topic arrives (as the hub's follower does), and a driver
//! that does what the NATS engine does with each [`Probe`]. Every entry of
//! the instance's interest ends up delivered or announced lost, however
//! the loss falls and however many entries arrive between two checks, and
//! a quiet or fully delivered log costs no walk.

use std::collections::{BTreeSet, HashMap};

use tidings_core::log::{LossWatch, Probe, Walk};

const GRACE: u64 = 1_000_000;
const EVERY: u64 = 1_000_000;

/// The shared log: (seq, topic) in order.
#[derive(Default)]
struct Log {
    entries: Vec<(u64, &'static str)>,
}

impl Log {
    fn append(&mut self, topic: &'static str) -> u64 {
        let seq = self.entries.len() as u64 + 1;
        self.entries.push((seq, topic));
        seq
    }
    fn head(&self) -> u64 {
        self.entries.len() as u64
    }
}

/// One instance: its interest, what it delivered, what it announced lost,
/// how many entries its walks fetched and how many questions they asked.
struct Instance {
    interest: &'static [&'static str],
    /// Where the interest began (every topic's floor).
    start: u64,
    watch: LossWatch,
    position: u64,
    /// Each topic's newest entry delivered or announced (its chain).
    chains: HashMap<&'static str, u64>,
    delivered: Vec<u64>,
    announced: Vec<u64>,
    walks: usize,
    topic_walks: usize,
    fetched: usize,
    looks: usize,
}

impl Instance {
    fn new(interest: &'static [&'static str], start: u64, budget: usize) -> Self {
        Self {
            interest,
            start,
            watch: LossWatch::new(start, GRACE, budget),
            position: start,
            chains: HashMap::new(),
            delivered: Vec::new(),
            announced: Vec::new(),
            walks: 0,
            topic_walks: 0,
            fetched: 0,
            looks: 0,
        }
    }

    /// Delivers `seq` if it still comes in order, or announces it lost.
    fn account(&mut self, log: &Log, seq: u64) {
        let (_, topic) = log.entries[seq as usize - 1];
        self.watch.saw(seq);
        let chain = self.chains.entry(topic).or_default();
        *chain = (*chain).max(seq);
        if seq > self.position {
            self.position = seq;
            self.delivered.push(seq);
        } else {
            self.announced.push(seq);
        }
    }

    /// A live arrival. A hole in its topic's chain (or, for its first
    /// entry here, between the floor and it) is fetched first.
    fn receive(&mut self, log: &Log, seq: u64) {
        let (_, topic) = log.entries[seq as usize - 1];
        if !self.interest.contains(&topic) {
            return;
        }
        let chain = self.chains.get(topic).copied().unwrap_or(self.start);
        if chain >= seq {
            self.watch.saw(seq);
            return; // fetched before it arrived
        }
        let hole: Vec<u64> = log
            .entries
            .iter()
            .filter(|(s, t)| *t == topic && *s > chain && *s < seq)
            .map(|(s, _)| *s)
            .collect();
        for s in hole {
            self.fetched += 1;
            self.account(log, s);
        }
        self.account(log, seq);
    }

    /// Appends `n` entries of `topic`, each arriving live.
    fn arrive(&mut self, log: &mut Log, topic: &'static str, n: usize) {
        for _ in 0..n {
            let seq = log.append(topic);
            self.receive(log, seq);
        }
    }

    /// Probes `times` times, one interval apart, after `*now`.
    fn probe_intervals(&mut self, log: &Log, now: &mut u64, times: usize) {
        for _ in 0..times {
            *now += EVERY;
            self.probe(log, *now);
        }
    }

    /// A probe at `now`, and the walk if it asks for one.
    fn probe(&mut self, log: &Log, now: u64) {
        let Probe::Check {
            after,
            through,
            walk,
        } = self.watch.probe(now, log.head())
        else {
            return;
        };
        self.walks += 1;
        let in_range = |seq: u64| seq > after && seq <= through;
        let missing: Vec<u64> = match walk {
            Walk::Arrivals => {
                let mine: Vec<u64> = log
                    .entries
                    .iter()
                    .filter(|(seq, topic)| in_range(*seq) && self.interest.contains(topic))
                    .map(|(seq, _)| *seq)
                    .collect();
                self.looks += mine.len();
                mine.into_iter()
                    .filter(|seq| !self.watch.seen(*seq))
                    .collect()
            }
            Walk::Topics => {
                self.topic_walks += 1;
                self.looks += self.interest.len();
                let mut missing: Vec<u64> = log
                    .entries
                    .iter()
                    .filter(|(seq, topic)| {
                        in_range(*seq)
                            && self.interest.contains(topic)
                            && seq > self.chains.get(topic).unwrap_or(&0)
                    })
                    .map(|(seq, _)| *seq)
                    .collect();
                missing.sort();
                missing
            }
        };
        for seq in missing {
            self.fetched += 1;
            self.account(log, seq);
        }
        self.watch.checked(through);
    }

    /// Every entry of the interest after `start` is delivered or announced.
    fn accounted(&self, log: &Log, start: u64) -> bool {
        let mine: BTreeSet<u64> = log
            .entries
            .iter()
            .filter(|(seq, topic)| *seq > start && self.interest.contains(topic))
            .map(|(seq, _)| *seq)
            .collect();
        let got: BTreeSet<u64> = self
            .delivered
            .iter()
            .chain(&self.announced)
            .copied()
            .collect();
        mine == got
    }
}

#[test]
fn a_topics_last_entry_lost_live_is_found_within_grace_and_an_interval() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 64);
    let first = log.append("a");
    i.receive(&log, first);
    let lost = log.append("b"); // stored, never arrives; nothing after it
    let mut now = 0;
    let mut found_at = None;
    for _ in 0..5 {
        now += EVERY;
        i.probe(&log, now);
        if i.delivered.contains(&lost) {
            found_at.get_or_insert(now);
        }
    }
    assert_eq!(i.delivered, vec![first, lost]);
    assert!(i.announced.is_empty());
    // Probed at 1 s, due at 2 s.
    assert_eq!(found_at, Some(2 * EVERY));
    assert!(i.accounted(&log, 0));
}

#[test]
fn a_lost_entry_followed_by_deliveries_of_other_topics_is_announced() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 64);
    let lost = log.append("a");
    let later = log.append("b");
    i.receive(&log, later);
    for t in 1..=3 {
        i.probe(&log, t * EVERY);
    }
    // It cannot come after `later` any more: its topic is told.
    assert_eq!(i.delivered, vec![later]);
    assert_eq!(i.announced, vec![lost]);
    assert!(i.accounted(&log, 0));
}

#[test]
fn what_arrived_is_not_fetched_and_others_topics_cost_nothing() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a"], 0, 64);
    let mut now = 0;
    for round in 0..20 {
        for k in 0..10 {
            let topic = if k % 3 == 0 { "a" } else { "other" };
            let seq = log.append(topic);
            i.receive(&log, seq);
        }
        now += EVERY;
        i.probe(&log, now);
        let _ = round;
    }
    assert_eq!(i.fetched, 0);
    assert!(i.accounted(&log, 0));
    // One walk per grace period at most while the log moves.
    assert!(i.walks <= 20, "{}", i.walks);
}

#[test]
fn a_quiet_log_is_never_walked() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a"], 0, 64);
    let seq = log.append("a");
    i.receive(&log, seq);
    for t in 1..=3 {
        i.probe(&log, t * EVERY);
    }
    let walks = i.walks;
    // Everything checked: from now on the head does not move.
    for t in 4..100 {
        i.probe(&log, t * EVERY);
    }
    assert_eq!(i.walks, walks);
    assert!(walks <= 1);
}

#[test]
fn an_entry_in_flight_at_the_probe_is_not_fetched_once_it_arrives_within_grace() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a"], 0, 64);
    let seq = log.append("a");
    i.probe(&log, EVERY); // head 1 probed; the entry is still on the wire
    i.receive(&log, seq); // arrives within grace
    i.probe(&log, 2 * EVERY);
    assert_eq!(i.fetched, 0);
    assert_eq!(i.delivered, vec![seq]);
}

#[test]
fn the_head_is_not_checked_before_grace() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a"], 0, 64);
    log.append("a"); // lost
    assert_eq!(i.watch.probe(0, log.head()), Probe::Idle);
    assert_eq!(i.watch.probe(GRACE - 1, log.head()), Probe::Idle);
    assert_eq!(
        i.watch.probe(GRACE, log.head()),
        Probe::Check {
            after: 0,
            through: 1,
            walk: Walk::Arrivals,
        }
    );
}

#[test]
fn entries_before_the_start_are_not_this_instances() {
    let mut log = Log::default();
    for _ in 0..5 {
        log.append("a");
    }
    let mut i = Instance::new(&["a"], 5, 64);
    for t in 1..=3 {
        i.probe(&log, t * EVERY);
    }
    assert_eq!(i.walks, 0);
    assert!(i.delivered.is_empty() && i.announced.is_empty());
}

#[test]
fn past_its_budget_the_watch_still_finds_a_lost_tail() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 4);
    let mut now = 0;
    i.arrive(&mut log, "a", 10);
    let lost = log.append("b");
    i.probe_intervals(&log, &mut now, 4);
    assert_eq!(i.delivered.last(), Some(&lost));
    assert_eq!(i.fetched, 1);
    assert!(i.accounted(&log, 0));
}

/// The hole a bounded memory of arrivals used to leave: a topic's last
/// entry lost, then more deliveries of another topic than the budget, in
/// one interval. Walking by topics finds it with one question per topic.
#[test]
fn past_its_budget_a_lost_tail_behind_other_topics_deliveries_is_announced() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 4);
    let first_b = log.append("b");
    i.receive(&log, first_b);
    let lost = log.append("b"); // b's last one: never arrives
    i.arrive(&mut log, "a", 100);
    let mut now = 0;
    i.probe_intervals(&log, &mut now, 4);
    assert_eq!(i.announced, vec![lost]);
    assert_eq!(i.fetched, 1);
    assert_eq!(i.topic_walks, 1);
    // Two topics, two questions: not one per entry that arrived.
    assert_eq!(i.looks, 2);
    assert!(i.accounted(&log, 0));
}

/// Blindness ends: once a check has covered it, checks walk by arrivals
/// again.
#[test]
fn after_a_busy_interval_the_watch_walks_by_arrivals_again() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 4);
    let mut now = 0;
    i.arrive(&mut log, "a", 10);
    i.probe_intervals(&log, &mut now, 3);
    assert_eq!(i.topic_walks, 1);
    let lost = log.append("b");
    let later = log.append("a");
    i.receive(&log, later);
    i.probe_intervals(&log, &mut now, 3);
    assert_eq!(i.topic_walks, 1, "quiet again: by arrivals");
    assert_eq!(i.announced, vec![lost]);
    assert!(i.accounted(&log, 0));
}

/// Many rounds of random losses on a busy log: everything is accounted for
/// once the log goes quiet for grace and two intervals, with a memory of
/// arrivals that holds every interval's and with one too small for most.
#[test]
fn random_losses_are_all_accounted_for() {
    for (seed, budget) in (1..200u64).flat_map(|seed| [(seed, 1000), (seed, 3)]) {
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut log = Log::default();
        let mut i = Instance::new(&["a", "b", "c"], 0, budget);
        let topics = ["a", "b", "c", "x", "y"];
        let mut now = 0;
        for _ in 0..50 {
            for _ in 0..(next() % 8) {
                let seq = log.append(topics[(next() % 5) as usize]);
                if next() % 4 != 0 {
                    i.receive(&log, seq);
                }
            }
            now += EVERY / 2;
            i.probe(&log, now);
        }
        i.probe_intervals(&log, &mut now, 4);
        assert!(i.accounted(&log, 0), "seed {seed}, budget {budget}");
        let mut all: Vec<u64> = i.delivered.clone();
        all.sort();
        assert_eq!(all, i.delivered, "delivered in order, seed {seed}");
        if budget < 10 {
            assert!(i.topic_walks > 0, "seed {seed}: the budget was exceeded");
        }
    }
}

#[test]
fn spaced_checks_still_find_the_loss_later_and_do_fewer_walks() {
    let mut log = Log::default();
    let mut i = Instance::new(&["a", "b"], 0, 64);
    i.watch.set_spacing(5 * EVERY);
    let mut now = 0;
    let mut lost = None;
    for round in 0..20 {
        let seq = log.append(if round % 2 == 0 { "a" } else { "other" });
        if round == 18 {
            lost = Some(seq); // a's last one: never arrives
        } else {
            i.receive(&log, seq);
        }
        now += EVERY;
        i.probe(&log, now);
    }
    i.probe_intervals(&log, &mut now, 8);
    assert!(i.walks <= 6, "{} walks", i.walks);
    assert_eq!(i.delivered.last().copied(), lost);
    assert!(i.accounted(&log, 0));
}
