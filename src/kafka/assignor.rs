//! Partition assignment for consumer-group membership: deciding which group
//! member archives which topic partition. The group leader calls [`assign`]
//! with the members' JoinGroup subscriptions and the current partition counts
//! and sends the result out in SyncGroup.
//!
//! [`assign`] is a pure, deterministic function of its arguments: it does no
//! I/O, reads no clock, uses no randomness, and does not depend on the order
//! in which the members are given, so any leader given the same group state
//! decides the same assignment.
//!
//! Two strategies, named as in the JoinGroup protocol list:
//!
//! - `range` ([`Strategy::Range`]): Kafka's RangeAssignor. Per topic, the
//!   subscribed members (in sorted order) get contiguous ranges, the first
//!   `count % n` of them one partition more.
//! - `sticky` ([`Strategy::Sticky`]): balanced, moving as few partitions as it
//!   can. Every member ends with floor(P/M) or ceil(P/M) partitions when all
//!   members subscribe to the same topics; members keep the partitions they
//!   report owning up to that quota. An assignment it produced, reported back
//!   as owned, is reproduced unchanged.
//!
//! Members are sorted by their static instance id if they have one, else by
//! member id (then by member id), before anything is decided; "earlier" below
//! means earlier in that order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A topic partition by name and number (the caller converts from its own type).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Part {
    pub topic: String,
    pub partition: i32,
}

impl Part {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Part {
            topic: topic.into(),
            partition,
        }
    }
}

/// One member as its JoinGroup subscription describes it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Member id, unique within the group.
    pub id: String,
    /// Static membership id (`group.instance.id`), if any.
    pub instance_id: Option<String>,
    /// Topics it subscribes to (duplicates are ignored).
    pub topics: Vec<String>,
    /// Partitions it owned in `generation` (empty for a new member).
    pub owned: Vec<Part>,
    /// Generation of `owned` (-1 if unknown).
    pub generation: i32,
}

/// An assignment strategy, by its JoinGroup protocol name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Sticky,
    Range,
}

impl Strategy {
    /// The name this strategy goes by in the JoinGroup protocol list.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Sticky => "sticky",
            Strategy::Range => "range",
        }
    }

    /// The strategy of a JoinGroup protocol name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sticky" => Some(Strategy::Sticky),
            "range" => Some(Strategy::Range),
            _ => None,
        }
    }
}

/// Assigns every partition of `partitions` (topic → partition count) to
/// exactly one member subscribed to its topic. Result: member id → sorted
/// partitions (every member appears, maybe with none).
///
/// A partition of a topic nobody subscribes to is not assigned; a topic with a
/// count of 0 (or less) has no partitions. Owned partitions that no longer
/// exist, or whose topic the member no longer subscribes to, are ignored.
/// Member ids must be unique (the broker guarantees it).
pub fn assign(
    strategy: Strategy,
    members: &[Member],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<Part>> {
    let group = Group::new(members, partitions);
    let held = match strategy {
        Strategy::Range => group.range(),
        Strategy::Sticky => group.sticky(),
    };
    group
        .members
        .iter()
        .zip(held)
        .map(|(member, parts)| {
            // Part indices are in (topic, partition) order, so this is sorted.
            let parts = parts.into_iter().map(|i| group.part(i)).collect();
            (member.id.clone(), parts)
        })
        .collect()
}

/// The input in index form. Members are indexed in sorted order; topics are
/// the assignable ones (at least one partition and one subscriber) in name
/// order; partitions are indexed in (topic, partition) order, so index order
/// is [`Part`] order.
struct Group<'a> {
    members: Vec<&'a Member>,
    topics: Vec<(&'a str, usize)>,
    /// Index of each topic's partition 0.
    first: Vec<usize>,
    /// Topic index of each partition.
    topic_of: Vec<usize>,
    /// `subscribed[m][t]`: member `m` subscribes to topic `t`.
    subscribed: Vec<Vec<bool>>,
}

impl<'a> Group<'a> {
    fn new(members: &'a [Member], partitions: &'a BTreeMap<String, i32>) -> Self {
        let mut members: Vec<&Member> = members.iter().collect();
        members.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let wanted: BTreeSet<&str> = members
            .iter()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .collect();
        let topics: Vec<(&str, usize)> = partitions
            .iter()
            .filter(|(topic, _)| wanted.contains(topic.as_str()))
            .filter_map(|(topic, &count)| {
                let count = usize::try_from(count).ok().filter(|&c| c > 0)?;
                Some((topic.as_str(), count))
            })
            .collect();
        let mut first = Vec::with_capacity(topics.len());
        let mut topic_of = Vec::new();
        for (t, &(_, count)) in topics.iter().enumerate() {
            first.push(topic_of.len());
            topic_of.extend(std::iter::repeat_n(t, count));
        }
        let subscribed = members
            .iter()
            .map(|m| {
                topics
                    .iter()
                    .map(|(topic, _)| m.topics.iter().any(|s| s == topic))
                    .collect()
            })
            .collect();
        Group {
            members,
            topics,
            first,
            topic_of,
            subscribed,
        }
    }

    fn part(&self, i: usize) -> Part {
        let t = self.topic_of[i];
        let partition = i32::try_from(i - self.first[t]).expect("partition counts are i32");
        Part::new(self.topics[t].0, partition)
    }

    /// The index of `part` if it exists and member `m` subscribes to its topic.
    fn claimable(&self, m: usize, part: &Part) -> Option<usize> {
        let t = self
            .topics
            .binary_search_by(|(topic, _)| (*topic).cmp(part.topic.as_str()))
            .ok()?;
        let partition = usize::try_from(part.partition).ok()?;
        (self.subscribed[m][t] && partition < self.topics[t].1).then(|| self.first[t] + partition)
    }

    /// Members subscribed to topic `t`, in sorted order.
    fn subscribers(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(move |&m| self.subscribed[m][t])
    }

    /// Kafka's RangeAssignor: per topic, contiguous ranges over the sorted
    /// subscribers, the first `count % n` getting one extra.
    fn range(&self) -> Vec<Vec<usize>> {
        let mut held = vec![Vec::new(); self.members.len()];
        for (t, &(_, count)) in self.topics.iter().enumerate() {
            let subs: Vec<usize> = self.subscribers(t).collect();
            let (base, extra) = (count / subs.len(), count % subs.len());
            let mut next = self.first[t];
            for (k, &m) in subs.iter().enumerate() {
                let len = base + usize::from(k < extra);
                held[m].extend(next..next + len);
                next += len;
            }
        }
        held
    }

    /// The sticky assignment: quotas, owned partitions kept up to the quota,
    /// the rest handed to the emptiest members, then single moves until no
    /// move can even out two members.
    fn sticky(&self) -> Vec<Vec<usize>> {
        let n = self.members.len();
        let total = self.topic_of.len();

        // Claims: each partition goes to its claimant with the highest
        // generation, the earliest of equals (members are visited in order).
        let mut claimant: Vec<Option<usize>> = vec![None; total];
        for (m, member) in self.members.iter().enumerate() {
            for part in &member.owned {
                if let Some(i) = self.claimable(m, part) {
                    match claimant[i] {
                        Some(c) if self.members[c].generation >= member.generation => {}
                        _ => claimant[i] = Some(m),
                    }
                }
            }
        }
        let mut claims = vec![Vec::new(); n];
        for (i, c) in claimant.iter().enumerate() {
            if let Some(c) = *c {
                claims[c].push(i);
            }
        }

        // Quotas over the members that can hold anything: floor(P/M) each,
        // ceil for the P % M members claiming the most (earliest of equals).
        let mut quota = vec![0; n];
        let mut able: Vec<usize> = (0..n)
            .filter(|&m| self.subscribed[m].iter().any(|&s| s))
            .collect();
        if !able.is_empty() {
            let (base, extra) = (total / able.len(), total % able.len());
            able.sort_by_key(|&m| (Reverse(claims[m].len()), m));
            for (k, &m) in able.iter().enumerate() {
                quota[m] = base + usize::from(k < extra);
            }
        }

        // Keep claimed partitions up to the quota (the lowest ones).
        let mut owner: Vec<Option<usize>> = vec![None; total];
        let mut count = vec![0; n];
        for (m, claimed) in claims.iter().enumerate() {
            for &i in claimed.iter().take(quota[m]) {
                owner[i] = Some(m);
                count[m] += 1;
            }
        }

        // Hand out the rest in partition order: to the emptiest subscriber
        // below its quota; if none (subscriptions differ), back to its
        // claimant, else to the emptiest subscriber.
        for i in 0..total {
            if owner[i].is_some() {
                continue;
            }
            let subs = || self.subscribers(self.topic_of[i]);
            let to = subs()
                .filter(|&m| count[m] < quota[m])
                .min_by_key(|&m| (count[m], m))
                .or(claimant[i])
                .or_else(|| subs().min_by_key(|&m| (count[m], m)))
                .expect("an assignable topic has a subscriber");
            owner[i] = Some(to);
            count[to] += 1;
        }

        let mut held: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (i, m) in owner.iter().enumerate() {
            held[m.expect("every partition is handed out")].insert(i);
        }

        // Where subscriptions differ, quotas can be out of reach: move single
        // partitions from fuller to emptier subscribers while one can even
        // out two members. Each move lowers the sum of squared counts, so this
        // ends; with equal subscriptions it never moves anything.
        while let Some((from, i, to)) = self.balancing_move(&held) {
            held[from].remove(&i);
            held[to].insert(i);
        }

        held.into_iter().map(|h| h.into_iter().collect()).collect()
    }

    /// A move of one partition to a subscriber holding at least two fewer
    /// than its holder: from the fullest holder (earliest of equals), its
    /// highest such partition, to the emptiest subscriber (earliest of equals).
    fn balancing_move(&self, held: &[BTreeSet<usize>]) -> Option<(usize, usize, usize)> {
        let mut donors: Vec<usize> = (0..held.len()).collect();
        donors.sort_by_key(|&m| (Reverse(held[m].len()), m));
        for from in donors {
            let mut emptiest: BTreeMap<usize, usize> = BTreeMap::new();
            for &i in held[from].iter().rev() {
                let t = self.topic_of[i];
                let to = *emptiest.entry(t).or_insert_with(|| {
                    self.subscribers(t)
                        .min_by_key(|&m| (held[m].len(), m))
                        .expect("a held topic has a subscriber")
                });
                if held[to].len() + 2 <= held[from].len() {
                    return Some((from, i, to));
                }
            }
        }
        None
    }
}

/// The order members are decided in: static instance id if present, else
/// member id; then member id.
fn sort_key(m: &Member) -> (&str, &str) {
    (m.instance_id.as_deref().unwrap_or(&m.id), &m.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    // Our `Strategy` enum, not proptest's trait (used by path below).
    use super::Strategy;
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    fn member(id: &str, topics: &[&str]) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: Vec::new(),
            generation: -1,
        }
    }

    fn counts(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
        spec.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    fn parts(topic: &str, partitions: &[i32]) -> Vec<Part> {
        partitions.iter().map(|&p| Part::new(topic, p)).collect()
    }

    /// The members of `result` again, owning what they were assigned.
    fn rejoin(members: &[Member], result: &BTreeMap<String, Vec<Part>>) -> Vec<Member> {
        let generation = members.iter().map(|m| m.generation).max().unwrap_or(-1) + 1;
        members
            .iter()
            .map(|m| Member {
                owned: result[&m.id].clone(),
                generation,
                ..m.clone()
            })
            .collect()
    }

    fn sizes(result: &BTreeMap<String, Vec<Part>>) -> Vec<usize> {
        result.values().map(Vec::len).collect()
    }

    fn is_subset(small: &[Part], big: &[Part]) -> bool {
        small.iter().all(|p| big.contains(p))
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in [Strategy::Sticky, Strategy::Range] {
            assert_eq!(Strategy::from_name(s.name()), Some(s));
        }
        assert_eq!(Strategy::Sticky.name(), "sticky");
        assert_eq!(Strategy::Range.name(), "range");
        assert_eq!(Strategy::from_name("roundrobin"), None);
    }

    #[test]
    fn range_splits_evenly_into_contiguous_ranges() {
        let members = [
            member("c", &["t"]),
            member("a", &["t"]),
            member("b", &["t"]),
        ];
        let out = assign(Strategy::Range, &members, &counts(&[("t", 12)]));
        assert_eq!(out["a"], parts("t", &[0, 1, 2, 3]));
        assert_eq!(out["b"], parts("t", &[4, 5, 6, 7]));
        assert_eq!(out["c"], parts("t", &[8, 9, 10, 11]));
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions_of_each_topic() {
        let members = [
            member("b", &["x", "y"]),
            member("a", &["x", "y"]),
            member("c", &["y", "x"]),
        ];
        let out = assign(Strategy::Range, &members, &counts(&[("x", 5), ("y", 4)]));
        let expect = |x: &[i32], y: &[i32]| [parts("x", x), parts("y", y)].concat();
        assert_eq!(out["a"], expect(&[0, 1], &[0, 1]));
        assert_eq!(out["b"], expect(&[2, 3], &[2]));
        assert_eq!(out["c"], expect(&[4], &[3]));
    }

    #[test]
    fn range_orders_by_instance_id_and_only_serves_subscribers() {
        let mut a = member("a", &["x", "y"]);
        a.instance_id = Some("z".to_string());
        let b = member("b", &["x"]);
        let c = member("c", &[]);
        let out = assign(
            Strategy::Range,
            &[a, b, c],
            &counts(&[("x", 3), ("y", 2), ("none", 4)]),
        );
        // Order: b, then a (instance id "z").
        assert_eq!(out["b"], parts("x", &[0, 1]));
        assert_eq!(out["a"], [parts("x", &[2]), parts("y", &[0, 1])].concat());
        assert_eq!(out["c"], Vec::new());
    }

    #[test]
    fn sticky_from_scratch_is_a_balanced_round_robin() {
        let members = [
            member("b", &["t"]),
            member("c", &["t"]),
            member("a", &["t"]),
        ];
        let out = assign(Strategy::Sticky, &members, &counts(&[("t", 10)]));
        assert_eq!(out["a"], parts("t", &[0, 3, 6, 9]));
        assert_eq!(out["b"], parts("t", &[1, 4, 7]));
        assert_eq!(out["c"], parts("t", &[2, 5, 8]));
    }

    #[test]
    fn sticky_joining_member_takes_its_share_from_the_others() {
        let topics = counts(&[("t", 12)]);
        let two = [member("a", &["t"]), member("b", &["t"])];
        let before = assign(Strategy::Sticky, &two, &topics);
        assert_eq!(sizes(&before), [6, 6]);

        let mut three = rejoin(&two, &before);
        three.push(member("c", &["t"]));
        let after = assign(Strategy::Sticky, &three, &topics);
        assert_eq!(sizes(&after), [4, 4, 4]);
        assert!(is_subset(&after["a"], &before["a"]));
        assert!(is_subset(&after["b"], &before["b"]));
    }

    #[test]
    fn sticky_leaving_member_is_spread_and_nobody_else_loses() {
        let topics = counts(&[("t", 12)]);
        let three = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let before = assign(Strategy::Sticky, &three, &topics);
        assert_eq!(sizes(&before), [4, 4, 4]);

        let mut two = rejoin(&three, &before);
        two.remove(1);
        let after = assign(Strategy::Sticky, &two, &topics);
        assert_eq!(sizes(&after), [6, 6]);
        assert!(is_subset(&before["a"], &after["a"]));
        assert!(is_subset(&before["c"], &after["c"]));
    }

    #[test]
    fn sticky_conflicting_claims_go_to_the_higher_generation() {
        let topics = counts(&[("t", 4)]);
        let mut a = member("a", &["t"]);
        a.owned = parts("t", &[0, 1]);
        a.generation = 1;
        let mut b = member("b", &["t"]);
        b.owned = parts("t", &[1, 2]);
        b.generation = 2;
        let out = assign(Strategy::Sticky, &[a.clone(), b.clone()], &topics);
        assert_eq!(out["a"], parts("t", &[0, 3]));
        assert_eq!(out["b"], parts("t", &[1, 2]));

        // Equal generations: the earlier member keeps it.
        b.generation = 1;
        let out = assign(Strategy::Sticky, &[b, a], &topics);
        assert_eq!(out["a"], parts("t", &[0, 1]));
        assert_eq!(out["b"], parts("t", &[2, 3]));
    }

    #[test]
    fn sticky_ignores_claims_on_vanished_or_unsubscribed_partitions() {
        let mut a = member("a", &["x"]);
        a.owned = [parts("x", &[5, -1]), parts("y", &[0]), parts("gone", &[0])].concat();
        a.generation = 3;
        let b = member("b", &["x", "y"]);
        let out = assign(Strategy::Sticky, &[a, b], &counts(&[("x", 2), ("y", 2)]));
        assert_eq!(out["a"], parts("x", &[0, 1]));
        assert_eq!(out["b"], parts("y", &[0, 1]));
    }

    #[test]
    fn sticky_keeps_a_static_members_partitions_across_a_new_member_id() {
        let topics = counts(&[("t", 6)]);
        let mut members = [member("m1", &["t"]), member("m2", &["t"])];
        members[0].instance_id = Some("host-b".to_string());
        members[1].instance_id = Some("host-a".to_string());
        let before = assign(Strategy::Sticky, &members, &topics);
        // Sorted by instance id: m2 (host-a) first.
        assert_eq!(before["m2"], parts("t", &[0, 2, 4]));

        let mut again = rejoin(&members, &before);
        again[1].id = "m2-restarted".to_string();
        let after = assign(Strategy::Sticky, &again, &topics);
        assert_eq!(after["m2-restarted"], before["m2"]);
        assert_eq!(after["m1"], before["m1"]);
    }

    #[test]
    fn sticky_with_differing_subscriptions_serves_only_subscribers() {
        let members = [
            member("a", &["x"]),
            member("b", &["x", "y"]),
            member("c", &["y"]),
            member("d", &[]),
            member("e", &["nothing-here"]),
        ];
        let topics = counts(&[("x", 2), ("y", 6), ("empty", 0), ("orphan", 3)]);
        let out = assign(Strategy::Sticky, &members, &topics);
        assert_eq!(out["a"], parts("x", &[0, 1]));
        assert!(out["b"].iter().all(|p| p.topic == "y"));
        assert!(out["c"].iter().all(|p| p.topic == "y"));
        assert_eq!((out["b"].len(), out["c"].len()), (3, 3));
        assert_eq!(out["d"], Vec::new());
        assert_eq!(out["e"], Vec::new());
        assert_eq!(
            out,
            assign(Strategy::Sticky, &rejoin(&members, &out), &topics)
        );
    }

    #[test]
    fn no_members_or_no_partitions_assign_nothing() {
        assert!(assign(Strategy::Sticky, &[], &counts(&[("t", 3)])).is_empty());
        let out = assign(Strategy::Range, &[member("a", &["t"])], &BTreeMap::new());
        assert_eq!(out["a"], Vec::new());
    }

    const TOPICS: [&str; 3] = ["a", "b", "c"];

    /// A group of 1..8 members over up to 3 topics of 0..20 partitions, with
    /// random subscriptions (sometimes to a missing topic), static ids and
    /// owned sets (sometimes out of range or unsubscribed), and generations.
    fn group() -> impl proptest::strategy::Strategy<Value = (Vec<Member>, BTreeMap<String, i32>)> {
        let topics = prop::collection::vec(prop::option::of(0i32..20), 3).prop_map(|counts| {
            TOPICS
                .iter()
                .zip(counts)
                .filter_map(|(t, c)| Some((t.to_string(), c?)))
                .collect::<BTreeMap<_, _>>()
        });
        let member = (
            prop::option::of(0u8..6),
            prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c", "d"]), 0..4),
            prop::collection::btree_set((0usize..3, 0i32..22), 0..12),
            -1i32..3,
        );
        (topics, prop::collection::vec(member, 1..8)).prop_map(|(topics, members)| {
            let members = members
                .into_iter()
                .enumerate()
                .map(|(k, (instance, subs, owned, generation))| Member {
                    id: format!("m{k}"),
                    instance_id: instance.map(|i| format!("i{i}")),
                    topics: subs.into_iter().map(str::to_string).collect(),
                    owned: owned
                        .into_iter()
                        .map(|(t, p)| Part::new(TOPICS[t], p))
                        .collect(),
                    generation,
                })
                .collect();
            (members, topics)
        })
    }

    /// Every partition with a subscriber assigned exactly once, only to a
    /// subscriber; every member present.
    fn check_valid(
        members: &[Member],
        topics: &BTreeMap<String, i32>,
        out: &BTreeMap<String, Vec<Part>>,
    ) {
        assert_eq!(out.len(), members.len());
        let mut seen = BTreeSet::new();
        for m in members {
            let held = &out[&m.id];
            assert!(held.is_sorted());
            for p in held {
                assert!(
                    m.topics.contains(&p.topic),
                    "{p:?} to non-subscriber {}",
                    m.id
                );
                assert!(seen.insert(p.clone()), "{p:?} assigned twice");
            }
        }
        let expected: BTreeSet<Part> = topics
            .iter()
            .filter(|(t, _)| members.iter().any(|m| m.topics.contains(t)))
            .flat_map(|(t, &n)| (0..n).map(move |p| Part::new(t.as_str(), p)))
            .collect();
        assert_eq!(seen, expected);
    }

    proptest! {
        #[test]
        fn assignments_are_valid_and_order_independent(
            (members, topics) in group(),
            rotate in 0usize..8,
        ) {
            let mut shuffled = members.clone();
            shuffled.reverse();
            shuffled.rotate_left(rotate % members.len());
            for strategy in [Strategy::Sticky, Strategy::Range] {
                let out = assign(strategy, &members, &topics);
                check_valid(&members, &topics, &out);
                prop_assert_eq!(&out, &assign(strategy, &shuffled, &topics));
            }
        }

        #[test]
        fn sticky_is_balanced_when_everyone_subscribes_to_everything(
            (mut members, topics) in group(),
        ) {
            for m in &mut members {
                m.topics = TOPICS.iter().map(|t| t.to_string()).collect();
            }
            let out = assign(Strategy::Sticky, &members, &topics);
            check_valid(&members, &topics, &out);
            let sizes = sizes(&out);
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            // Range is balanced per topic (not overall).
            let range = assign(Strategy::Range, &members, &topics);
            for t in topics.keys() {
                let per: Vec<usize> =
                    range.values().map(|ps| ps.iter().filter(|p| &p.topic == t).count()).collect();
                prop_assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1);
            }
        }

        #[test]
        fn sticky_reproduces_its_own_assignment((members, topics) in group()) {
            let out = assign(Strategy::Sticky, &members, &topics);
            prop_assert_eq!(&out, &assign(Strategy::Sticky, &rejoin(&members, &out), &topics));
        }

        /// With equal subscriptions and no conflicting claims, every member
        /// keeps at least min(its valid claims, floor(P/M)).
        #[test]
        fn sticky_keeps_owned_partitions_up_to_the_floor_quota(
            (mut members, topics) in group(),
        ) {
            let mut claimed = BTreeSet::new();
            for m in &mut members {
                m.topics = TOPICS.iter().map(|t| t.to_string()).collect();
                m.owned.retain(|p| claimed.insert(p.clone()));
            }
            let out = assign(Strategy::Sticky, &members, &topics);
            let total: i32 = topics.values().sum();
            let floor = usize::try_from(total).unwrap() / members.len();
            for m in &members {
                let valid = m.owned.iter().filter(|p| p.partition < topics.get(&p.topic).copied().unwrap_or(0));
                let kept = valid.clone().filter(|p| out[&m.id].contains(p)).count();
                prop_assert!(kept >= valid.count().min(floor));
            }
        }
    }
}
