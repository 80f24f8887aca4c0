//! agentwire-scheduler: the part that knows the machine and decides which core runs what.
//!
//! - [`machine`]: the machine model (cores by kind, PUs, NUMA nodes and distances, devices)
//!   and a builder for synthetic machines.
//! - [`hwloc`]: reads the live machine or an hwloc XML export through hwlocality.
//! - [`plan`]: maps partitions' asks (cores by kind and count, NUMA, named CPUs, GPU/NPU
//!   shares) to concrete cores, or explains why it cannot.
//! - [`probe`]: device probes (CUDA, NPU) the accelerator crate supplies.
//! - [`checks`]: start-up checks (isolation, governor, hugepages, memlock), one line each.
//! - [`rebalance`]: busy partitions borrow idle partitions' cores and give them back.
//!
//! ```
//! use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
//! let vm = MachineBuilder::new("2-core VM").cores(0, 2, 1).build();
//! let p = plan(&vm, &PlanConfig::embedded_default()).unwrap();
//! assert_eq!(p.partition("router").unwrap().executor_pus(), vec![1]);
//! ```
#![forbid(unsafe_code)]

pub mod checks;
pub mod hwloc;
pub mod machine;
pub mod plan;
pub mod probe;
pub mod rebalance;
