//! Where segment memory lives: huge pages when the machine has them, and the NUMA node of
//! the core that will serve the agent. Each fallback is logged once per process, never a
//! failure.
//!
//! ```
//! let node = agentwire_shm::placement::numa_node_of_cpu(0);
//! assert!(node.is_none() || node == Some(0) || node.is_some());
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

static ONE_NODE_LOGGED: AtomicBool = AtomicBool::new(false);
static NUMA_UNAVAILABLE_LOGGED: AtomicBool = AtomicBool::new(false);
static HUGE_PAGES_LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs `message` once per process for the given flag.
pub(crate) fn log_once(flag: &AtomicBool, message: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::info!("{}", message());
    }
}

/// Logs, once, that huge pages are not in use and why.
pub(crate) fn log_huge_pages_fallback(reason: &str) {
    log_once(&HUGE_PAGES_LOGGED, || {
        format!(
            "huge pages unavailable ({reason}): segments use 4 KiB pages; reserve 2 MiB pages \
             with `sysctl vm.nr_hugepages=N` to enable them"
        )
    });
}

/// Free 2 MiB huge pages the kernel reports, or 0.
///
/// ```
/// let _free = agentwire_shm::placement::free_huge_pages_2mib();
/// ```
pub fn free_huge_pages_2mib() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The NUMA node of logical CPU `cpu` (OS index), or `None` when unknown.
///
/// ```
/// let _ = agentwire_shm::placement::numa_node_of_cpu(0);
/// ```
pub fn numa_node_of_cpu(cpu: usize) -> Option<u32> {
    #[cfg(feature = "numa")]
    {
        numa::node_of_cpu(cpu)
    }
    #[cfg(not(feature = "numa"))]
    {
        let _ = cpu;
        None
    }
}

/// Binds `area` to the NUMA node of `cpu`. Returns the node bound to, or `None` when the
/// machine has one node (nothing to do) or binding is unavailable; both are logged once.
///
/// ```
/// let map = memmap2::MmapMut::map_anon(4096).unwrap();
/// let _ = agentwire_shm::placement::bind_to_cpu_node(&map[..], 0);
/// ```
pub fn bind_to_cpu_node(area: &[u8], cpu: usize) -> Option<u32> {
    #[cfg(feature = "numa")]
    {
        numa::bind(area, cpu)
    }
    #[cfg(not(feature = "numa"))]
    {
        let _ = (area, cpu);
        log_once(&NUMA_UNAVAILABLE_LOGGED, || {
            "built without the `numa` feature: segments are not NUMA-placed".to_string()
        });
        None
    }
}

#[cfg(feature = "numa")]
mod numa {
    use super::{log_once, NUMA_UNAVAILABLE_LOGGED, ONE_NODE_LOGGED};
    use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
    use hwlocality::memory::nodeset::NodeSet;
    use hwlocality::Topology;
    use std::sync::OnceLock;

    /// The live topology, discovered once per process (discovery costs milliseconds).
    fn topology() -> Option<&'static Topology> {
        static TOPOLOGY: OnceLock<Option<Topology>> = OnceLock::new();
        TOPOLOGY
            .get_or_init(|| match Topology::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    log_once(&NUMA_UNAVAILABLE_LOGGED, || {
                        format!(
                            "hwloc topology discovery failed ({e}): segments are not NUMA-placed"
                        )
                    });
                    None
                }
            })
            .as_ref()
    }

    fn nodeset_of_cpu(topology: &Topology, cpu: usize) -> Option<NodeSet> {
        let pu = topology.pu_with_os_index(cpu)?;
        let cpuset = pu.cpuset()?;
        Some(NodeSet::from_cpuset(topology, cpuset))
    }

    pub(super) fn node_of_cpu(cpu: usize) -> Option<u32> {
        let topology = topology()?;
        let nodeset = nodeset_of_cpu(topology, cpu)?;
        nodeset.first_set().map(|i| usize::from(i) as u32)
    }

    pub(super) fn bind(area: &[u8], cpu: usize) -> Option<u32> {
        let topology = topology()?;
        let nodes = topology.nodeset().weight().unwrap_or(1);
        if nodes <= 1 {
            log_once(&ONE_NODE_LOGGED, || {
                "one NUMA node on this machine: segment memory is node-local by construction"
                    .to_string()
            });
            return None;
        }
        let nodeset = nodeset_of_cpu(topology, cpu)?;
        let node = nodeset.first_set().map(|i| usize::from(i) as u32);
        match topology.bind_memory_area::<[u8], _>(
            area,
            &nodeset,
            MemoryBindingPolicy::Bind,
            MemoryBindingFlags::MIGRATE,
        ) {
            Ok(()) => node,
            Err(e) => {
                log_once(&NUMA_UNAVAILABLE_LOGGED, || {
                    format!(
                        "binding segment memory to NUMA node {node:?} failed ({e}); left unbound"
                    )
                });
                None
            }
        }
    }
}
