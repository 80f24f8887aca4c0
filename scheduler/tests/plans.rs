//! Plans for real machines (hwloc XML exports from hwloc's test suite, in tests/data/hwloc)
//! and synthetic ones, the seed allocation matrix planned and refused, and bad configs
//! refused with messages that say what to change.

use agentwire_scheduler::hwloc;
use agentwire_scheduler::machine::{CoreKind, DeviceKind, Machine, MachineBuilder};
use agentwire_scheduler::plan::{plan, Plan, PlanConfig, PlanError};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hwloc")
        .join(name)
}

fn seed() -> PlanConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-allocation.toml");
    PlanConfig::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config(text: &str) -> PlanConfig {
    PlanConfig::from_toml(text).unwrap()
}

/// Invariants of every plan: a PU is in at most one partition unless its core is marked
/// shared, router hyper-threads are idle and nobody else's, housekeeping holds core 0's PUs
/// unless the config named them.
fn check_invariants(machine: &Machine, p: &Plan) {
    let mut owner: BTreeMap<usize, (&str, bool)> = BTreeMap::new();
    for part in &p.partitions {
        for c in &part.cores {
            assert!(machine.cores[c.core].pus.contains(&c.pu), "{part:?}");
            for &pu in &c.pus {
                if let Some((other, other_shared)) = owner.insert(pu, (&part.name, c.shared)) {
                    assert!(
                        c.shared || other_shared,
                        "pu {pu} in {other} and {} without sharing",
                        part.name
                    );
                }
            }
        }
    }
    for pu in &p.idle_siblings {
        assert!(!owner.contains_key(pu), "idle sibling {pu} given out");
    }
    if let Some(router) = p.partition("router") {
        for c in &router.cores {
            assert_eq!(c.pus, vec![c.pu], "router cores run on one PU");
        }
    }
}

fn executor_nodes(p: &Plan, name: &str) -> Vec<u32> {
    let mut nodes: Vec<u32> = p
        .partition(name)
        .unwrap()
        .cores
        .iter()
        .filter_map(|c| c.numa_node)
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

#[test]
fn every_real_topology_loads_and_plans_the_embedded_default() {
    for (file, cores, pus, nodes) in [
        ("16amd64-4distances.xml", 16, 16, 8),
        ("24em64t-2n6c2t-pci.xml", 12, 24, 2),
        ("fakecpukinds.xml", 2, 4, 1),
    ] {
        let machine = hwloc::load(Some(&data(file))).unwrap();
        assert_eq!(
            (
                machine.cores.len(),
                machine.pu_count(),
                machine.numa_nodes.len()
            ),
            (cores, pus, nodes),
            "{file}"
        );
        let p = plan(&machine, &PlanConfig::embedded_default()).unwrap();
        check_invariants(&machine, &p);
        assert_eq!(p.partitions.len(), 5, "{file}");
        assert_eq!(
            p.housekeeping, machine.cores[0].pus,
            "{file}: core 0 is housekeeping"
        );
        assert!(!p.table().is_empty());
    }
}

#[test]
fn numa_distances_and_devices_come_from_the_export() {
    let amd = hwloc::load(Some(&data("16amd64-4distances.xml"))).unwrap();
    let matrix = amd.numa_distances.as_ref().expect("distance matrix");
    assert_eq!(matrix.len(), 8);
    assert!((0..8).all(|i| matrix[i][i] == 10));
    assert_eq!(amd.numa_distance(0, 5), 20);
    let intel = hwloc::load(Some(&data("24em64t-2n6c2t-pci.xml"))).unwrap();
    let network: Vec<&str> = intel
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Network)
        .map(|d| d.name.as_str())
        .collect();
    assert!(
        network.contains(&"eth0") && network.contains(&"ib0"),
        "{network:?}"
    );
    assert!(intel
        .devices
        .iter()
        .any(|d| d.kind == DeviceKind::Storage && d.name == "sda"));
    assert_eq!(intel.accelerators(DeviceKind::Gpu).count(), 0);
}

#[test]
fn cpu_kinds_rank_the_most_powerful_kind_as_performance() {
    let m = hwloc::load(Some(&data("fakecpukinds.xml"))).unwrap();
    assert!(m.is_hybrid());
    // PU 3 is the most efficient-ranked ("IntelCore", efficiency 10): its core is the
    // performance core.
    let performance: Vec<&Vec<usize>> = m
        .cores
        .iter()
        .filter(|c| c.kind == CoreKind::Performance)
        .map(|c| &c.pus)
        .collect();
    assert_eq!(performance, vec![&vec![1, 3]]);
    let c = config("[plan]\nhousekeeping_cores = 0\n[partitions.router]\nperformance = 1\n[partitions.streaming]\nefficiency = 1\n");
    let p = plan(&m, &c).unwrap();
    assert_eq!(p.partition("router").unwrap().executor_pus(), vec![1]);
    assert_eq!(p.idle_siblings, vec![3]);
    assert_eq!(
        p.partition("streaming").unwrap().cores[0].kind,
        CoreKind::Efficiency
    );
    let e = plan(&m, &config("[partitions.streaming]\nefficiency = 2\n")).unwrap_err();
    assert!(
        e.to_string().contains("asks for 2 efficiency cores")
            && e.to_string().contains("has 1 efficiency cores"),
        "{e}"
    );
}

#[test]
fn two_socket_partitions_stay_on_one_numa_node_with_router_siblings_idle() {
    let m = hwloc::load(Some(&data("24em64t-2n6c2t-pci.xml"))).unwrap();
    let c = config(
        "[partitions.router]\nperformance = 2\n[partitions.streaming]\nany = 5\n[partitions.twin]\nany = 4\n",
    );
    let p = plan(&m, &c).unwrap();
    check_invariants(&m, &p);
    assert_eq!(p.idle_siblings.len(), 2, "{}", p.table());
    for name in ["router", "streaming", "twin"] {
        assert_eq!(
            executor_nodes(&p, name).len(),
            1,
            "{name} on one node\n{}",
            p.table()
        );
    }
    // 5 + 4 cores cannot both fit on one 6-core node beside housekeeping and the router.
    assert_ne!(executor_nodes(&p, "streaming"), executor_nodes(&p, "twin"));
}

#[test]
fn a_partition_larger_than_any_node_spreads_to_the_nearest_and_says_so() {
    let m = hwloc::load(Some(&data("16amd64-4distances.xml"))).unwrap();
    let p = plan(&m, &config("[partitions.streaming]\nany = 5\n")).unwrap();
    check_invariants(&m, &p);
    assert_eq!(p.partition("streaming").unwrap().cores.len(), 5);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("streaming spans NUMA nodes")),
        "{:?}",
        p.notes
    );
}

fn hybrid(p_cores: usize, e_cores: usize) -> MachineBuilder {
    MachineBuilder::new(&format!("hybrid {p_cores}P+{e_cores}E"))
        .cores(0, p_cores, 2)
        .efficiency_cores(0, e_cores)
}

#[test]
fn the_seed_matrix_plans_on_a_hybrid_machine_that_has_the_cores() {
    let m = hybrid(12, 16)
        .device(DeviceKind::Gpu, "cuda0", Some(0))
        .device(DeviceKind::Npu, "NPU", Some(0))
        .build();
    let p = plan(&m, &seed()).unwrap();
    check_invariants(&m, &p);
    let count = |name: &str, kind: CoreKind| {
        p.partition(name)
            .unwrap()
            .cores
            .iter()
            .filter(|c| c.kind == kind && !c.shared)
            .count()
    };
    use CoreKind::{Efficiency as E, Performance as P};
    assert_eq!((count("router", P), count("router", E)), (2, 0));
    assert_eq!((count("streaming", P), count("streaming", E)), (3, 6));
    assert_eq!((count("nas", P), count("nas", E)), (2, 0));
    assert_eq!((count("twin", P), count("twin", E)), (2, 4));
    assert_eq!((count("fusion", P), count("fusion", E)), (1, 0));
    let accelerators = |name: &str| {
        p.partition(name)
            .unwrap()
            .accelerators
            .iter()
            .map(|a| (a.kind, a.share))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        accelerators("nas"),
        vec![(DeviceKind::Gpu, 1.0), (DeviceKind::Npu, 0.5)]
    );
    assert_eq!(accelerators("fusion"), vec![(DeviceKind::Npu, 0.5)]);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(p.idle_siblings.len(), 2, "the router's two hyper-threads");
}

#[test]
fn the_seed_matrix_is_refused_on_machines_without_the_cores_or_accelerators() {
    // 8 P-cores with 2 threads and 16 E-cores: housekeeping, router, streaming and nas take
    // all 8 P-cores, so twin's ask is the one refused.
    let m = hybrid(8, 16)
        .device(DeviceKind::Gpu, "cuda0", Some(0))
        .device(DeviceKind::Npu, "NPU", Some(0))
        .build();
    let e = plan(&m, &seed()).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, PlanError::NotEnoughCores { ref partition, .. } if partition == "twin"),
        "{text}"
    );
    assert!(text.contains("asks for 2 performance cores"), "{text}");
    assert!(text.contains("has 8 performance cores, 0 free"), "{text}");
    assert!(text.contains("allow_sharing = true"), "{text}");
    // Enough cores but no NPU.
    let e = plan(
        &hybrid(12, 16)
            .device(DeviceKind::Gpu, "cuda0", None)
            .build(),
        &seed(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("nas asks for 0.5 of an NPU") && e.to_string().contains("no NPU"),
        "{e}"
    );
    // The 2-core VM: refused at the first ask that does not fit.
    let vm = MachineBuilder::new("vm").cores(0, 2, 1).build();
    let e = plan(&vm, &seed()).unwrap_err();
    assert!(
        e.to_string().contains("no GPU"),
        "accelerators are matched first: {e}"
    );
}

#[test]
fn a_two_socket_four_node_server_keeps_partitions_node_local_and_near_their_gpu() {
    let mut b = MachineBuilder::new("2-socket 4-NUMA");
    for node in 0..4u32 {
        b = b.package(node as usize / 2).cores(node, 8, 2);
    }
    let m = b
        .distances(vec![
            vec![10, 12, 32, 32],
            vec![12, 10, 32, 32],
            vec![32, 32, 10, 12],
            vec![32, 32, 12, 10],
        ])
        .device(DeviceKind::Gpu, "cuda0", Some(3))
        .build();
    let c = config(
        "[partitions.router]\nperformance = 2\n[partitions.streaming]\nany = 8\n[partitions.nas]\nany = 4\ngpu = 1\n[partitions.twin]\nany = 6\n[partitions.fusion]\nany = 2\n",
    );
    let p = plan(&m, &c).unwrap();
    check_invariants(&m, &p);
    assert_eq!(
        executor_nodes(&p, "nas"),
        vec![3],
        "NUMA-near its GPU\n{}",
        p.table()
    );
    for name in ["router", "streaming", "twin", "fusion"] {
        assert_eq!(executor_nodes(&p, name).len(), 1, "{name}\n{}", p.table());
    }
    // An explicit node is honoured, and refused when it lacks room.
    let p = plan(&m, &config("[partitions.twin]\nany = 3\nnuma = 2\n")).unwrap();
    assert_eq!(executor_nodes(&p, "twin"), vec![2]);
    let e = plan(&m, &config("[partitions.twin]\nany = 9\nnuma = 2\n")).unwrap_err();
    assert!(
        e.to_string().contains("cores of any kind on NUMA node 2")
            && e.to_string().contains("drop `numa`"),
        "{e}"
    );
}

#[test]
fn the_embedded_default_shares_cores_on_a_two_core_vm_and_says_so() {
    let vm = MachineBuilder::new("2-core VM").cores(0, 2, 1).build();
    let p = plan(&vm, &PlanConfig::embedded_default()).unwrap();
    check_invariants(&vm, &p);
    assert_eq!(p.partition("router").unwrap().executor_pus(), vec![1]);
    assert!(
        !p.partition("router").unwrap().cores[0].shared,
        "the router core is its own"
    );
    for engine in ["streaming", "nas", "twin", "fusion"] {
        assert_eq!(
            p.partition(engine).unwrap().executor_pus(),
            vec![0],
            "{engine}"
        );
    }
    assert_eq!(p.notes.len(), 1, "one line: {:?}", p.notes);
    assert!(p.notes[0].contains("shared"), "{}", p.notes[0]);
    // One core: everything shares it, still no refusal.
    let one = MachineBuilder::new("1 core").cores(0, 1, 1).build();
    assert!(plan(&one, &PlanConfig::embedded_default()).is_ok());
}

#[test]
fn bad_configs_are_refused_with_what_to_change() {
    let m = MachineBuilder::new("8 cores").cores(0, 8, 1).build();
    let e = plan(
        &m,
        &config("[partitions.router]\ncpus = [2]\n[partitions.streaming]\ncpus = [2, 3]\n"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "partitions router and streaming both name cpu 2; give each its own cpus, or set `allow_sharing = true` under [plan]"
    );
    let e = plan(&m, &config("[partitions.router]\ncpus = [42]\n")).unwrap_err();
    assert!(
        e.to_string().contains("names cpu 42") && e.to_string().contains("has cpus 0-7"),
        "{e}"
    );
    let e = plan(&m, &config("[partitions.twin]\n")).unwrap_err();
    assert!(e.to_string().contains("twin: asks for no cores"), "{e}");
    let e = plan(&m, &config("[partitions.nas]\nany = 1\ngpu = 2\n")).unwrap_err();
    assert!(e.to_string().contains("`gpu = 2` is not a share"), "{e}");
    let e = plan(&m, &config("[partitions.streaming]\nefficiency = 1\n")).unwrap_err();
    assert!(e.to_string().contains("no efficiency cores"), "{e}");
    assert!(
        PlanConfig::from_toml("[partitions.router]\nperformance = \"two\"\n")
            .unwrap_err()
            .contains("line 2")
    );
    // Named cpus are honoured exactly.
    let p = plan(&m, &config("[partitions.router]\ncpus = [5, 6]\n")).unwrap();
    assert_eq!(p.partition("router").unwrap().executor_pus(), vec![5, 6]);
}

#[test]
fn plans_serialize_to_json() {
    let vm = MachineBuilder::new("vm").cores(0, 2, 1).build();
    let p = plan(&vm, &PlanConfig::embedded_default()).unwrap();
    let v: serde_json::Value = serde_json::to_value(&p).unwrap();
    assert_eq!(v["partitions"][0]["name"], "router");
    assert_eq!(v["partitions"][0]["cores"][0]["kind"], "performance");
    let m: serde_json::Value = serde_json::to_value(&vm).unwrap();
    assert_eq!(m["cores"].as_array().unwrap().len(), 2);
}

/// An NPU probe as the accelerator crate will supply (OpenVINO's device list); here a fake
/// that reports one NPU on node 0, and one that cannot run.
struct FakeNpuProbe(Result<usize, &'static str>);

impl agentwire_scheduler::probe::DeviceProbe for FakeNpuProbe {
    fn name(&self) -> &str {
        "fake-openvino"
    }

    fn probe(&self) -> Result<Vec<agentwire_scheduler::machine::Device>, String> {
        let count = self.0.map_err(str::to_string)?;
        Ok((0..count)
            .map(|i| agentwire_scheduler::machine::Device {
                kind: DeviceKind::Npu,
                name: format!("NPU.{i}"),
                numa_node: Some(0),
                source: "fake-openvino".into(),
            })
            .collect())
    }
}

#[test]
fn devices_from_the_probe_hook_make_the_seed_matrix_plan() {
    use agentwire_scheduler::probe::apply_probes;
    let mut m = hybrid(12, 16)
        .device(DeviceKind::Gpu, "cuda0", Some(0))
        .build();
    assert!(plan(&m, &seed()).is_err(), "no NPU yet");
    let failing = FakeNpuProbe(Err("libopenvino_c.so not found"));
    let lines = apply_probes(&mut m, &[&failing]);
    assert_eq!(
        lines,
        vec!["device probe fake-openvino: unavailable: libopenvino_c.so not found"]
    );
    let found = FakeNpuProbe(Ok(1));
    let lines = apply_probes(&mut m, &[&found]);
    assert!(lines[0].contains("1 device(s): npu NPU.0"), "{lines:?}");
    // A second run adds nothing twice.
    assert!(apply_probes(&mut m, &[&found])[0].ends_with("no devices"));
    assert_eq!(m.accelerators(DeviceKind::Npu).count(), 1);
    let p = plan(&m, &seed()).unwrap();
    assert_eq!(p.partition("fusion").unwrap().accelerators[0].name, "NPU.0");
}
