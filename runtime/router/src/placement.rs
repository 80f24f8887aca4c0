//! Which router shard serves a new agent: the least loaded (fewest agents) among the shards
//! on the agent's NUMA node, else among all shards; ties go to the lowest shard index.
//! The agent's node is the node of the CPU its process last ran on (`/proc/PID/stat`),
//! looked up in sysfs; unknown (no sysfs, one node, a process already gone) means "any".
//!
//! ```
//! use agentwire_router::placement::choose_shard;
//! // Two shards on node 0, one on node 1; an agent on node 1 goes to shard 2.
//! assert_eq!(choose_shard(&[0, 0, 5], &[Some(0), Some(0), Some(1)], Some(1)), 2);
//! // An agent of unknown node goes to the least loaded shard.
//! assert_eq!(choose_shard(&[3, 1, 5], &[Some(0), Some(0), Some(1)], None), 1);
//! ```

/// The shard for a new agent: least `agents_per_shard` among shards whose node is
/// `agent_node` (when any is), else among all.
///
/// ```
/// assert_eq!(agentwire_router::placement::choose_shard(&[2, 2], &[None, None], Some(0)), 0);
/// ```
pub fn choose_shard(
    agents_per_shard: &[usize],
    shard_nodes: &[Option<u32>],
    agent_node: Option<u32>,
) -> usize {
    let near =
        |s: &usize| agent_node.is_some() && shard_nodes.get(*s).copied().flatten() == agent_node;
    let shards = 0..agents_per_shard.len();
    let pool: Vec<usize> = if shards.clone().any(|s| near(&s)) {
        shards.filter(near).collect()
    } else {
        shards.collect()
    };
    pool.into_iter()
        .min_by_key(|&s| (agents_per_shard[s], s))
        .unwrap_or(0)
}

/// The NUMA node of `cpu` from sysfs (`/sys/devices/system/cpu/cpuN/nodeM`).
///
/// ```
/// // Every Linux machine with sysfs has CPU 0 on some node.
/// let node = agentwire_router::placement::cpu_numa_node(0);
/// assert!(node.is_none() || node == Some(0) || node.unwrap() < 1024);
/// ```
pub fn cpu_numa_node(cpu: usize) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}")).ok()?;
    dir.flatten().find_map(|entry| {
        entry
            .file_name()
            .to_str()?
            .strip_prefix("node")?
            .parse()
            .ok()
    })
}

/// The NUMA node of the CPU process `pid` last ran on.
///
/// ```
/// let node = agentwire_router::placement::process_numa_node(std::process::id());
/// assert_eq!(node, agentwire_router::placement::process_cpu(std::process::id()).and_then(agentwire_router::placement::cpu_numa_node));
/// ```
pub fn process_numa_node(pid: u32) -> Option<u32> {
    cpu_numa_node(process_cpu(pid)?)
}

/// The CPU process `pid` last ran on (field 39 of `/proc/PID/stat`).
///
/// ```
/// assert!(agentwire_router::placement::process_cpu(std::process::id()).is_some());
/// ```
pub fn process_cpu(pid: u32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(36)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_shards_first_then_least_loaded_then_lowest_index() {
        let nodes = [Some(0), Some(1), Some(1), Some(0)];
        assert_eq!(choose_shard(&[0, 4, 2, 0], &nodes, Some(1)), 2);
        assert_eq!(choose_shard(&[0, 2, 2, 0], &nodes, Some(1)), 1);
        assert_eq!(choose_shard(&[5, 4, 2, 3], &nodes, Some(0)), 3);
        // A node no shard is on: all shards.
        assert_eq!(choose_shard(&[5, 4, 2, 3], &nodes, Some(7)), 2);
        assert_eq!(choose_shard(&[1, 1], &[None, None], None), 0);
        assert_eq!(choose_shard(&[], &[], None), 0);
    }
}
