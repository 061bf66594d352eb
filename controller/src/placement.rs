//! Where a new topic's replicas go: [`place`], a pure function of the registered brokers.
//!
//! The proposer runs it and puts its result in [`crate::Command::CreateTopic`], rather than
//! the state machine running it at apply time: the replicated command then says exactly
//! where every replica is, so a later change to the placement rules cannot make nodes that
//! replay an old log disagree, and the state machine only checks the assignment.
//!
//! Replicas of one queue sit on distinct brokers. Queue `q` takes the candidates rotated by
//! `q`, so leaders (each queue's first replica) go round-robin over the brokers and so do
//! the followers. With a preferred area, that area's brokers come first: each queue's leader
//! and as many replicas as the area has brokers stay in it, and only the rest goes to the
//! other brokers. An area without brokers falls back to all of them: a preference, not a
//! constraint.

use std::collections::BTreeMap;

use crate::state::BrokerInfo;

/// Why no placement exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// A topic needs at least one queue.
    #[error("a topic needs at least one queue")]
    NoQueues,
    /// A queue needs at least one replica.
    #[error("a queue needs at least one replica")]
    NoReplicas,
    /// Replicas of a queue must sit on distinct brokers, and there are too few.
    #[error("{replicas} replicas need {replicas} brokers, {brokers} are registered")]
    NotEnoughBrokers {
        /// Replicas asked for.
        replicas: u8,
        /// Brokers registered.
        brokers: usize,
    },
}

/// Replica lists for `queue_count` queues of `replicas` replicas each, over `brokers`,
/// preferring those of `preferred_area` (see the module docs).
pub fn place(
    brokers: &BTreeMap<String, BrokerInfo>,
    queue_count: u32,
    replicas: u8,
    preferred_area: Option<&str>,
) -> Result<Vec<Vec<String>>, PlaceError> {
    if queue_count == 0 {
        return Err(PlaceError::NoQueues);
    }
    if replicas == 0 {
        return Err(PlaceError::NoReplicas);
    }
    let wanted = usize::from(replicas);
    if brokers.len() < wanted {
        return Err(PlaceError::NotEnoughBrokers {
            replicas,
            brokers: brokers.len(),
        });
    }
    let (mut primary, mut secondary): (Vec<&String>, Vec<&String>) = match preferred_area {
        Some(area) => {
            let inside = brokers.iter().filter(|(_, info)| info.area == area);
            let outside = brokers.iter().filter(|(_, info)| info.area != area);
            (
                inside.map(|(id, _)| id).collect(),
                outside.map(|(id, _)| id).collect(),
            )
        }
        None => (brokers.keys().collect(), Vec::new()),
    };
    if primary.is_empty() {
        std::mem::swap(&mut primary, &mut secondary);
    }
    let from_primary = wanted.min(primary.len());
    let placement = (0..queue_count as usize)
        .map(|q| {
            let rotated = |list: &[&String], take: usize| -> Vec<String> {
                (0..take)
                    .map(|i| list[(q + i) % list.len()].clone())
                    .collect()
            };
            let mut queue = rotated(&primary, from_primary);
            if wanted > from_primary {
                queue.extend(rotated(&secondary, wanted - from_primary));
            }
            queue
        })
        .collect();
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(areas: &[(&str, &str)]) -> BTreeMap<String, BrokerInfo> {
        areas
            .iter()
            .map(|(id, area)| {
                let info = BrokerInfo {
                    addr: format!("{id}:1"),
                    cluster: "c".into(),
                    area: (*area).into(),
                    shards: 1,
                };
                ((*id).to_owned(), info)
            })
            .collect()
    }

    fn ids(placement: &[Vec<String>]) -> Vec<Vec<&str>> {
        placement
            .iter()
            .map(|q| q.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn replicas_are_distinct_and_leaders_go_round_robin() {
        let all = brokers(&[("a", "x"), ("b", "x"), ("c", "x")]);
        let placement = place(&all, 4, 2, None).unwrap();
        assert_eq!(
            ids(&placement),
            [["a", "b"], ["b", "c"], ["c", "a"], ["a", "b"]]
        );
        let placement = place(&all, 3, 3, None).unwrap();
        for queue in &placement {
            let mut sorted = queue.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{queue:?}");
        }
        let leaders: Vec<&str> = placement.iter().map(|q| q[0].as_str()).collect();
        assert_eq!(leaders, ["a", "b", "c"]);
    }

    #[test]
    fn the_preferred_area_takes_the_leaders_and_as_many_replicas_as_it_has_brokers() {
        let all = brokers(&[("a", "east"), ("b", "west"), ("c", "east"), ("d", "west")]);
        let placement = place(&all, 2, 2, Some("west")).unwrap();
        assert_eq!(ids(&placement), [["b", "d"], ["d", "b"]]);

        // Three replicas, two brokers in the area: the third goes elsewhere, the leader stays.
        let placement = place(&all, 2, 3, Some("west")).unwrap();
        assert_eq!(ids(&placement), [["b", "d", "a"], ["d", "b", "c"]]);
    }

    #[test]
    fn an_area_without_brokers_falls_back_to_all() {
        let all = brokers(&[("a", "east"), ("b", "east")]);
        let placement = place(&all, 2, 1, Some("north")).unwrap();
        assert_eq!(ids(&placement), [["a"], ["b"]]);
    }

    #[test]
    fn too_few_brokers_and_zero_counts_are_errors() {
        let two = brokers(&[("a", "x"), ("b", "x")]);
        let error = place(&two, 1, 3, None).unwrap_err();
        assert_eq!(
            error,
            PlaceError::NotEnoughBrokers {
                replicas: 3,
                brokers: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "3 replicas need 3 brokers, 2 are registered"
        );
        assert_eq!(place(&two, 0, 1, None), Err(PlaceError::NoQueues));
        assert_eq!(place(&two, 1, 0, None), Err(PlaceError::NoReplicas));
        assert_eq!(
            place(&BTreeMap::new(), 1, 1, None),
            Err(PlaceError::NotEnoughBrokers {
                replicas: 1,
                brokers: 0
            })
        );
    }
}
