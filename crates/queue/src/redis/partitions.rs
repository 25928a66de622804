//! Partitions: one namespace's work spread over several hash tags, so a Redis Cluster spreads
//! it over its shards (one hash tag is one slot, which one primary serves).
//!
//! Partition 0 keeps the namespace's own tag (`{ns}:jobs`, the layout from before partitions
//! existed, so turning them on keeps what is queued); partition `i > 0` is `{ns:i}`. Every
//! script still touches one partition only, so each stays atomic on a cluster.
//!
//! The count a system has ever been asked for is recorded in `{ns}:partitions` (the highest
//! `queue.partitions` any process connected with). Workers read every partition below it and
//! below their own setting, so a producer that starts with more partitions is followed by the
//! workers already running within one maintenance pass. Lowering the setting retires the
//! partitions above it only once each is empty: a retired partition is marked in its own slot
//! (`{ns:i}:retired`), atomically with the emptiness check, and a push to a retired partition is
//! refused by the same script that would add the item, so a producer still running with the
//! old, larger count pushes to partition 0 instead. Nothing is ever stranded in a partition
//! that no worker reads.

/// The most partitions a namespace may have (`queue.partitions`); a larger recorded count
/// (the record lives in Redis, which is outside our trust) is read as this.
pub(super) const MAX_PARTITIONS: usize = 64;

/// The keys of one partition.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) jobs: String,
    pub(super) delayed: String,
    pub(super) dead: String,
    /// Present once the partition is retired: pushes to it are refused.
    pub(super) retired: String,
}

impl Keys {
    fn new(namespace: &str, partition: usize) -> Keys {
        let tag = if partition == 0 {
            format!("{{{namespace}}}")
        } else {
            format!("{{{namespace}:{partition}}}")
        };
        Keys {
            jobs: format!("{tag}:jobs"),
            delayed: format!("{tag}:delayed"),
            dead: format!("{tag}:dead"),
            retired: format!("{tag}:retired"),
        }
    }
}

/// Every partition's keys (built once), and the key recording the partition count.
#[derive(Debug)]
pub(super) struct Layout {
    partitions: Vec<Keys>,
    /// `{ns}:partitions`: the highest count asked for and not retired since.
    pub(super) recorded: String,
}

impl Layout {
    pub(super) fn new(namespace: &str) -> Layout {
        Layout {
            partitions: (0..MAX_PARTITIONS)
                .map(|p| Keys::new(namespace, p))
                .collect(),
            recorded: format!("{{{namespace}}}:partitions"),
        }
    }

    /// The keys of `partition` (`< MAX_PARTITIONS`; callers clamp).
    pub(super) fn keys(&self, partition: usize) -> &Keys {
        &self.partitions[partition.min(MAX_PARTITIONS - 1)]
    }
}

/// The partition an item goes to: FNV-1a of its id, so the same id always lands in the same
/// partition for a given count (the choice only spreads load; nothing relies on it).
pub(super) fn partition_of(item_id: &str, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in item_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions as u64) as usize
}

/// A delivery's handle (and an operator's reference to an entry): the stream entry id for
/// partition 0, as before partitions existed, and `<partition>/<entry id>` for the others.
pub(super) fn handle(partition: usize, entry: &str) -> String {
    if partition == 0 {
        entry.to_owned()
    } else {
        format!("{partition}/{entry}")
    }
}

/// The partition and entry id a handle names; `None` for a handle no partition can hold
/// (references come from operators and web forms: untrusted).
pub(super) fn split_handle(handle: &str) -> Option<(usize, &str)> {
    match handle.split_once('/') {
        None => Some((0, handle)),
        Some((partition, entry)) => {
            let partition: usize = partition.parse().ok()?;
            (partition > 0 && partition < MAX_PARTITIONS && !entry.is_empty())
                .then_some((partition, entry))
        }
    }
}

/// `items` grouped by partition, in partition order, each group in the original order.
pub(super) fn by_partition<T>(
    items: impl IntoIterator<Item = (usize, T)>,
) -> std::collections::BTreeMap<usize, Vec<T>> {
    let mut groups: std::collections::BTreeMap<usize, Vec<T>> = std::collections::BTreeMap::new();
    for (partition, item) in items {
        groups.entry(partition).or_default().push(item);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_zero_keeps_the_layout_from_before_partitions() {
        let layout = Layout::new("byok");
        assert_eq!(layout.keys(0).jobs, "{byok}:jobs");
        assert_eq!(layout.keys(0).dead, "{byok}:dead");
        assert_eq!(layout.keys(3).jobs, "{byok:3}:jobs");
        assert_eq!(layout.keys(3).retired, "{byok:3}:retired");
        assert_eq!(layout.recorded, "{byok}:partitions");
    }

    #[test]
    fn handles_name_their_partition_and_bad_ones_name_none() {
        assert_eq!(handle(0, "1-0"), "1-0");
        assert_eq!(handle(5, "1-0"), "5/1-0");
        assert_eq!(split_handle("1-0"), Some((0, "1-0")));
        assert_eq!(split_handle("5/1-0"), Some((5, "1-0")));
        for bad in ["0/1-0", "x/1-0", "64/1-0", "7/", "-1/1-0"] {
            assert_eq!(split_handle(bad), None, "{bad}");
        }
    }

    #[test]
    fn items_spread_over_every_partition_and_stay_in_theirs() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let id = uuid_like(i);
            let p = partition_of(&id, 4);
            assert_eq!(p, partition_of(&id, 4));
            counts[p] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of("anything", 1), 0);
    }

    fn uuid_like(i: usize) -> String {
        format!("0190a1b2-c3d4-7e5f-8a9b-{i:012x}")
    }
}
