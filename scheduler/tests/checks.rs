//! Start-up checks against kernel files written to a directory of the test's own: each
//! outcome (isolated or not, governors, hugepages, memlock) with its one-line fix.

use agentwire_scheduler::checks::{run_checks, Check, CheckInput, CheckLevel, SystemFiles};
use std::path::{Path, PathBuf};

struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aw-checks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn input(cpus: &[usize]) -> CheckInput {
    CheckInput {
        partition_cpus: cpus.to_vec(),
        executors: 4,
        memlock_per_executor_bytes: 640 * 1024,
        memlock_limit_bytes: Some(8 << 20),
        memlock_exempt: false,
    }
}

fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn a_tuned_machine_passes_every_check() {
    let root = FakeRoot::new("tuned");
    root.write("sys/devices/system/cpu/isolated", "2-5\n")
        .write("sys/devices/system/cpu/nohz_full", "2-5\n")
        .write(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        )
        .write(
            "proc/meminfo",
            "MemTotal: 1000 kB\nHugePages_Total:     512\nHugepagesize:       2048 kB\n",
        );
    for cpu in 2..=5 {
        root.write(
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            "performance\n",
        );
    }
    let checks = run_checks(&SystemFiles::under(root.path()), &input(&[2, 3, 4, 5]));
    assert_eq!(checks.len(), 4);
    for c in &checks {
        assert_eq!(c.level, CheckLevel::Ok, "{c}");
    }
    assert!(by_name(&checks, "hugepages")
        .line
        .contains("512 hugepages of 2048 KiB"));
    assert!(by_name(&checks, "isolation").line.contains("2-5"));
}

#[test]
fn an_untuned_machine_gets_one_line_with_the_fix_for_each() {
    let root = FakeRoot::new("untuned");
    root.write("sys/devices/system/cpu/isolated", "\n")
        .write("sys/devices/system/cpu/nohz_full", "(null)\n")
        .write(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always madvise [never]\n",
        )
        .write(
            "proc/meminfo",
            "HugePages_Total:       0\nHugepagesize:       2048 kB\n",
        )
        .write(
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
            "powersave\n",
        )
        .write(
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "schedutil\n",
        )
        .write(
            "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "performance\n",
        );
    let mut i = input(&[1, 2, 3]);
    i.memlock_limit_bytes = Some(1 << 20);
    let checks = run_checks(&SystemFiles::under(root.path()), &i);
    for c in &checks {
        assert_ne!(c.level, CheckLevel::Ok, "{c}");
        assert!(c.line.contains("fix:"), "{c}");
        assert!(!c.line.contains('\n'), "{c}");
    }
    let isolation = by_name(&checks, "isolation");
    assert!(
        isolation.line.contains("isolcpus=1-3 nohz_full=1-3"),
        "{isolation}"
    );
    let governor = by_name(&checks, "governor");
    assert!(governor.line.contains("cpus 1-2"), "{governor}");
    assert!(governor.line.contains("powersave/schedutil"), "{governor}");
    assert!(governor
        .line
        .contains("cpupower frequency-set -g performance"));
    let huge = by_name(&checks, "hugepages");
    assert!(huge.line.contains("transparent huge pages never"), "{huge}");
    assert!(huge.line.contains("vm.nr_hugepages"));
    let memlock = by_name(&checks, "memlock");
    assert_eq!(memlock.level, CheckLevel::Problem);
    assert!(
        memlock.line.contains("4 executor(s) lock 2560 KiB"),
        "{memlock}"
    );
    assert!(memlock.line.contains("RLIMIT_MEMLOCK is 1024 KiB"));
    assert!(memlock.line.contains("ulimit -l 2560"));
}

#[test]
fn partly_isolated_names_only_the_missing_cpus_and_a_vm_has_no_governor() {
    let root = FakeRoot::new("partial");
    root.write("sys/devices/system/cpu/isolated", "2-3\n")
        .write("sys/devices/system/cpu/nohz_full", "2\n");
    let checks = run_checks(&SystemFiles::under(root.path()), &input(&[2, 3, 4]));
    let isolation = by_name(&checks, "isolation");
    assert_eq!(isolation.level, CheckLevel::Advice);
    assert!(
        isolation.line.starts_with("partition cpus 3-4 are not"),
        "{isolation}"
    );
    let governor = by_name(&checks, "governor");
    assert_eq!(governor.level, CheckLevel::Ok);
    assert!(governor.line.contains("no cpufreq governor"), "{governor}");
    // No THP file and no meminfo: advice, never a crash.
    assert_eq!(by_name(&checks, "hugepages").level, CheckLevel::Advice);
}

#[test]
fn memlock_is_fine_for_root_or_unlimited_and_the_live_machine_checks_run() {
    let mut i = input(&[1]);
    i.memlock_exempt = true;
    i.memlock_limit_bytes = Some(0);
    let root = SystemFiles::live();
    assert_eq!(
        by_name(&run_checks(&root, &i), "memlock").level,
        CheckLevel::Ok
    );
    i.memlock_exempt = false;
    i.memlock_limit_bytes = None;
    let checks = run_checks(&root, &i);
    assert!(by_name(&checks, "memlock").line.contains("unlimited"));
    // This VM: every check answers in one line, whatever the kernel's settings.
    for c in &checks {
        assert!(!c.line.is_empty() && !c.line.contains('\n'), "{c}");
    }
}
