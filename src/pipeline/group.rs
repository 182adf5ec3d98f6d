//! The group thread: makes this process a member of the consumer group
//! (`kafka.group_id`), so that processes share the partitions. It joins,
//! computes the assignment when it is the leader, heartbeats, rejoins when
//! the group or the topics change, and leaves on shutdown.
//!
//! Each new assignment goes to the fetcher, which starts and stops
//! partitions; the current generation goes to the committer, whose commits
//! carry it (the coordinator refuses commits from a stale generation).
//! Partitions keep being archived while a rebalance is under way: two
//! processes briefly building the same partition is safe (the create-only
//! commit decides) and cheaper than stopping everything. This thread never
//! fetches records and never touches the store.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use kafka_protocol::ResponseError;

use super::msg::Assignment;
use super::registry::GroupState;
use super::stop::Stop;
use crate::config::KafkaConfig;
use crate::format::names::TopicPartition;
use crate::kafka::assignor::{self, Part, Strategy};
use crate::kafka::{
    Client, Generation, JoinConfig, Joined, KafkaError, Layout, Subscription, encode_subscription,
};

/// How long a stopping member waits for the last offset commit before it
/// leaves the group.
const LEAVE_WAIT: Duration = Duration::from_secs(10);

/// What to do after a failed group request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Join again (the group is rebalancing, or our generation is stale).
    Rejoin,
    /// Join again as a new member (the coordinator forgot us).
    NewMember,
    /// Wait and try again (coordinator moving, network trouble).
    Retry,
    /// Stop the process: only an operator can fix this.
    Fatal,
}

/// What a failed JoinGroup/SyncGroup/Heartbeat means, as Kafka's consumer reads it.
pub fn next_step(e: &KafkaError) -> Next {
    use ResponseError as E;
    match e {
        KafkaError::Broker { code, .. } => match code {
            E::RebalanceInProgress | E::IllegalGeneration => Next::Rejoin,
            E::UnknownMemberId => Next::NewMember,
            E::FencedInstanceId
            | E::GroupAuthorizationFailed
            | E::InconsistentGroupProtocol
            | E::InvalidSessionTimeout
            | E::GroupMaxSizeReached
            | E::InvalidGroupId => Next::Fatal,
            _ if e.is_retriable() => Next::Retry,
            _ => Next::Fatal,
        },
        KafkaError::Interrupted => Next::Fatal,
        _ if e.is_retriable() => Next::Retry,
        _ => Next::Fatal,
    }
}

/// The fix to suggest for a fatal group error.
fn explain(e: &KafkaError, config: &KafkaConfig) -> String {
    let group = &config.group_id;
    match e {
        KafkaError::Broker {
            code: ResponseError::FencedInstanceId,
            ..
        } => format!(
            "another process joined group {group} with kafka.group_instance_id {:?}: give each process its own",
            config.group.instance_id.as_deref().unwrap_or("")
        ),
        KafkaError::Broker {
            code: ResponseError::InconsistentGroupProtocol,
            ..
        } => format!(
            "group {group} is used by other kinds of consumers: give kafka-store its own kafka.group_id"
        ),
        KafkaError::Broker {
            code: ResponseError::InvalidSessionTimeout,
            ..
        } => format!(
            "the broker refuses kafka.session_timeout {:?} (see its group.min/max.session.timeout.ms)",
            config.group.session_timeout
        ),
        other => format!("cannot take part in consumer group {group}: {other}"),
    }
}

/// Everything the group thread owns.
pub struct Member<'a> {
    pub client: Client,
    pub config: &'a KafkaConfig,
    pub stop: &'a Stop,
    pub state: &'a GroupState,
    pub assignments: Sender<Assignment>,
    /// Set when the pipeline has drained (last offsets committed).
    pub drained: &'a AtomicBool,
}

/// The topics matching `kafka.topics` / `kafka.topic_regex` now, with
/// their partition counts.
pub fn subscribed(client: &mut Client, config: &KafkaConfig) -> Result<Layout, KafkaError> {
    client.subscribed(&config.topics, config.topic_regex.as_ref())
}

impl Member<'_> {
    fn done(&self) -> bool {
        self.stop.requested() || self.drained.load(Ordering::SeqCst)
    }

    /// Sleeps unless the pipeline ends; false when it does.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.done() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            self.stop.sleep(left.min(Duration::from_millis(50)));
        }
        false
    }

    fn layout(&mut self) -> Result<Layout, KafkaError> {
        subscribed(&mut self.client, self.config)
    }

    pub fn run(mut self) -> anyhow::Result<()> {
        let join = JoinConfig {
            group: self.config.group_id.clone(),
            instance_id: self.config.group.instance_id.clone(),
            session_timeout: self.config.group.session_timeout,
            rebalance_timeout: self.config.group.rebalance_timeout,
        };
        let backoff = self.config.client.retry_backoff_max;
        let mut member_id = String::new();
        let mut owned: Vec<TopicPartition> = Vec::new();
        let mut owned_generation = -1;
        let mut current: Option<Generation> = None;
        let mut warned_empty = false;
        'join: while !self.done() {
            let layout = match self.layout() {
                Ok(l) => l,
                Err(e) => {
                    log::warn!("cannot read topic metadata for group {}: {e}", join.group);
                    self.sleep(backoff);
                    continue;
                }
            };
            if layout.is_empty() && !warned_empty {
                log::warn!("no topic matches kafka.topics / kafka.topic_regex yet");
                warned_empty = true;
            }
            let subscription = encode_subscription(&Subscription {
                topics: layout.keys().cloned().collect(),
                owned: owned.clone(),
                generation: owned_generation,
            });
            let protocols: Vec<(&str, Bytes)> = self
                .config
                .group
                .assignors
                .iter()
                .map(|s| (s.name(), subscription.clone()))
                .collect();
            let joined = match self.client.join_group(&join, &member_id, &protocols) {
                Ok(j) => j,
                Err(e) => match self.after_error(&e, &mut member_id) {
                    Ok(true) => continue,
                    Ok(false) => break 'join,
                    Err(fatal) => return Err(fatal),
                },
            };
            // Kept even if the sync fails: joining again with the same id
            // spares the group a wait for a member that never comes back.
            member_id = joined.generation.member_id.clone();
            let synced = match joined.is_leader() {
                true => self.plan(&joined, &layout),
                false => Ok(Vec::new()),
            }
            .and_then(|plan| {
                self.client
                    .sync_group(&join, &joined.generation, &joined.protocol, &plan)
            });
            let mine = match synced {
                Ok(m) => m,
                Err(e) => match self.after_error(&e, &mut member_id) {
                    Ok(true) => continue,
                    Ok(false) => break 'join,
                    Err(fatal) => return Err(fatal),
                },
            };
            log_assignment(&join.group, &joined, &owned, &mine);
            owned = mine.clone();
            owned_generation = joined.generation.generation;
            self.state.set(Some((
                joined.generation.clone(),
                mine.iter().cloned().collect(),
            )));
            let _ = self.assignments.send(Assignment {
                partitions: mine.into_iter().collect(),
            });
            current = Some(joined.generation.clone());

            // Heartbeat until a rebalance, a change of topics, or the end.
            let mut last_ok = Instant::now();
            let mut next_check = Instant::now() + self.config.group.metadata_refresh;
            loop {
                if !self.sleep(self.config.group.heartbeat_interval) {
                    break 'join;
                }
                match self.client.heartbeat(&join.group, &joined.generation) {
                    Ok(()) => last_ok = Instant::now(),
                    Err(e) => match next_step(&e) {
                        Next::Rejoin => {
                            log::info!("group {}: rebalancing ({e})", join.group);
                            continue 'join;
                        }
                        Next::NewMember => {
                            log::info!("group {}: {e}; joining as a new member", join.group);
                            member_id.clear();
                            continue 'join;
                        }
                        Next::Retry if last_ok.elapsed() < join.session_timeout => {
                            log::debug!("group {}: heartbeat failed: {e}", join.group);
                        }
                        Next::Retry => {
                            // The coordinator has dropped us by now: stop
                            // archiving what is surely someone else's.
                            log::warn!(
                                "group {}: no heartbeat for {}s ({e}); releasing partitions and joining again",
                                join.group,
                                last_ok.elapsed().as_secs()
                            );
                            self.state.set(None);
                            owned.clear();
                            let _ = self.assignments.send(Assignment {
                                partitions: BTreeSet::new(),
                            });
                            continue 'join;
                        }
                        Next::Fatal if self.done() => break 'join,
                        Next::Fatal => anyhow::bail!(explain(&e, self.config)),
                    },
                }
                if Instant::now() >= next_check {
                    next_check = Instant::now() + self.config.group.metadata_refresh;
                    match self.layout() {
                        Ok(now) if now != layout => {
                            log::info!(
                                "group {}: topics or partitions changed; rebalancing",
                                join.group
                            );
                            continue 'join;
                        }
                        Ok(_) => {}
                        Err(e) => log::debug!("metadata refresh failed: {e}"),
                    }
                }
            }
        }
        self.leave(current);
        Ok(())
    }

    /// What to do after a failed JoinGroup or SyncGroup: Ok(true) to join
    /// again, Ok(false) when the pipeline ends, Err to stop the process.
    fn after_error(&self, e: &KafkaError, member_id: &mut String) -> anyhow::Result<bool> {
        let group = &self.config.group_id;
        match next_step(e) {
            Next::Rejoin => log::info!("group {group}: {e}; joining again"),
            Next::NewMember => {
                log::info!("group {group}: {e}; joining as a new member");
                member_id.clear();
            }
            Next::Retry => {
                log::warn!("group {group}: {e}; retrying");
                self.sleep(self.config.client.retry_backoff_max);
            }
            Next::Fatal if self.done() => return Ok(false),
            Next::Fatal => anyhow::bail!(explain(e, self.config)),
        }
        Ok(!self.done())
    }

    /// The leader's plan: every subscribed partition to one member.
    fn plan(
        &mut self,
        joined: &Joined,
        layout: &Layout,
    ) -> Result<Vec<(String, Vec<TopicPartition>)>, KafkaError> {
        let mut counts = layout.clone();
        for (_, _, sub) in &joined.members {
            for topic in &sub.topics {
                if !counts.contains_key(topic) {
                    match self.client.partitions(topic) {
                        Ok(p) => {
                            counts.insert(topic.clone(), p.len() as i32);
                        }
                        Err(KafkaError::UnknownTopic { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let members: Vec<assignor::Member> = joined
            .members
            .iter()
            .map(|(id, instance, sub)| assignor::Member {
                id: id.clone(),
                instance_id: instance.clone(),
                topics: sub.topics.clone(),
                owned: sub
                    .owned
                    .iter()
                    .map(|tp| Part {
                        topic: tp.topic.to_string(),
                        partition: tp.partition,
                    })
                    .collect(),
                generation: sub.generation,
            })
            .collect();
        let strategy = Strategy::from_name(&joined.protocol).unwrap_or(Strategy::Range);
        Ok(assignor::assign(strategy, &members, &counts)
            .into_iter()
            .map(|(member, parts)| {
                let parts = parts
                    .iter()
                    .map(|p| TopicPartition::new(&p.topic, p.partition))
                    .collect();
                (member, parts)
            })
            .collect())
    }

    /// Leaves the group once the last offsets are committed (a static
    /// member stays, so that a restart within the session timeout keeps its
    /// partitions).
    fn leave(&mut self, current: Option<Generation>) {
        let waited = Instant::now();
        while !self.drained.load(Ordering::SeqCst)
            && !self.stop.aborted()
            && waited.elapsed() < LEAVE_WAIT
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.state.set(None);
        let Some(generation) = current else { return };
        if generation.instance_id.is_some() {
            return;
        }
        match self.client.leave_group(&self.config.group_id, &generation) {
            Ok(()) => log::info!("left group {}", self.config.group_id),
            Err(e) => log::warn!(
                "cannot leave group {} (its members will notice after the session timeout): {e}",
                self.config.group_id
            ),
        }
    }
}

/// One line per generation: what this process archives now, and what changed.
fn log_assignment(group: &str, joined: &Joined, before: &[TopicPartition], now: &[TopicPartition]) {
    let list = |tps: &mut dyn Iterator<Item = &TopicPartition>| {
        tps.map(|tp| tp.to_string()).collect::<Vec<_>>().join(",")
    };
    let added = list(&mut now.iter().filter(|tp| !before.contains(tp)));
    let removed = list(&mut before.iter().filter(|tp| !now.contains(tp)));
    log::info!(
        "group {group} generation {}{}: {} partition(s) [{}] (+[{added}] -[{removed}])",
        joined.generation.generation,
        if joined.is_leader() { " (leader)" } else { "" },
        now.len(),
        list(&mut now.iter())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_errors_lead_where_kafkas_consumer_goes() {
        use ResponseError as E;
        let broker = |code| KafkaError::Broker {
            what: "x".into(),
            code,
        };
        let table = [
            (broker(E::RebalanceInProgress), Next::Rejoin),
            (broker(E::IllegalGeneration), Next::Rejoin),
            (broker(E::UnknownMemberId), Next::NewMember),
            (broker(E::FencedInstanceId), Next::Fatal),
            (broker(E::GroupAuthorizationFailed), Next::Fatal),
            (broker(E::InconsistentGroupProtocol), Next::Fatal),
            (broker(E::CoordinatorNotAvailable), Next::Retry),
            (broker(E::NotCoordinator), Next::Retry),
            (broker(E::CoordinatorLoadInProgress), Next::Retry),
            (KafkaError::Interrupted, Next::Fatal),
        ];
        for (e, want) in table {
            assert_eq!(next_step(&e), want, "{e}");
        }
    }
}
