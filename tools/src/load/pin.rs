//! Where `agentwire load`'s agent threads run (`--pin`).
//!
//! A router shard busy-polls its core, then spins a while after every message before it
//! parks. An agent thread that the kernel wakes on that core waits until the scheduler
//! preempts the router: about a millisecond on an untuned machine (measured here: unicast
//! open loop at 300 msg/s, p50 0.9 ms with the agents free to land on the router's core,
//! 55-66 µs with them kept off it). A tuned server keeps agents off the daemon's cores with
//! `isolcpus` or cpusets; `--pin auto` (the default) does it for the load's own threads, so
//! its figures measure the router rather than the scheduler.

use agentwire_scheduler::machine::{format_cpus, parse_cpus};

/// The `--pin` choice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pin {
    /// Every CPU this process may use except the daemon's router CPUs (when any is left).
    #[default]
    Auto,
    /// Wherever the kernel puts them.
    None,
    /// These CPUs.
    Cpus(Vec<usize>),
}

impl std::str::FromStr for Pin {
    type Err = String;

    /// Parses `auto`, `none`, or a CPU list such as `0,2-3`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => return Ok(Self::Auto),
            "none" => return Ok(Self::None),
            _ => {}
        }
        match parse_cpus(text) {
            Some(cpus) if !cpus.is_empty() => Ok(Self::Cpus(cpus)),
            _ => Err(format!(
                "--pin {text}: not auto, none or a CPU list (write a list like 0,2-3)"
            )),
        }
    }
}

/// The CPUs the load's agent threads are restricted to (`None`: not restricted) and one line
/// saying why, from the choice, the CPUs this process may use and the daemon's router CPUs.
/// An explicit list must lie within `allowed`.
pub fn agent_cpus(
    pin: &Pin,
    allowed: &[usize],
    router_cpus: &[usize],
) -> Result<(Option<Vec<usize>>, String), String> {
    match pin {
        Pin::None => Ok((None, "agent threads unpinned (--pin none)".into())),
        Pin::Cpus(cpus) => {
            let outside: Vec<usize> = cpus
                .iter()
                .copied()
                .filter(|c| !allowed.contains(c))
                .collect();
            if cpus.is_empty() || !outside.is_empty() {
                return Err(format!(
                    "--pin: cpus {} are not among the cpus this process may use ({})",
                    format_cpus(&outside),
                    format_cpus(allowed)
                ));
            }
            let on_router: Vec<usize> = cpus
                .iter()
                .copied()
                .filter(|c| router_cpus.contains(c))
                .collect();
            let note = if on_router.is_empty() {
                String::new()
            } else {
                format!(
                    " (cpus {} are the daemon's router cpus: expect the scheduler in the latencies)",
                    format_cpus(&on_router)
                )
            };
            Ok((
                Some(cpus.clone()),
                format!("agent threads on cpus {}{note}", format_cpus(cpus)),
            ))
        }
        Pin::Auto => {
            let rest: Vec<usize> = allowed
                .iter()
                .copied()
                .filter(|c| !router_cpus.contains(c))
                .collect();
            if rest.is_empty() || rest.len() == allowed.len() {
                let why = if rest.is_empty() {
                    "every cpu this process may use is a router cpu"
                } else {
                    "no router cpu among the cpus this process may use"
                };
                return Ok((None, format!("agent threads unpinned ({why})")));
            }
            Ok((
                Some(rest.clone()),
                format!(
                    "agent threads on cpus {}, off the daemon's router cpus {} (--pin none to let the kernel place them)",
                    format_cpus(&rest),
                    format_cpus(router_cpus)
                ),
            ))
        }
    }
}

/// The router partition's CPUs from a daemon's status report (`router_cpu` info line for a
/// daemon that reports no partitions).
pub fn router_cpus(report: &agentwire_shm::control::StatusReport) -> Vec<usize> {
    if let Some(router) = report.partitions.iter().find(|p| p.name == "router") {
        return router.cpus.iter().map(|&c| c as usize).collect();
    }
    report
        .info
        .iter()
        .filter(|(k, _)| k == "router_cpu")
        .flat_map(|(_, v)| parse_cpus(v).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_agents_off_router_cpus_when_others_remain() {
        let (cpus, why) = agent_cpus(&Pin::Auto, &[0, 1], &[1]).unwrap();
        assert_eq!(cpus, Some(vec![0]));
        assert!(why.contains("off the daemon's router cpus 1"), "{why}");
        // A router on a CPU this process may not use: nothing to avoid.
        assert_eq!(agent_cpus(&Pin::Auto, &[0, 1], &[5]).unwrap().0, None);
        assert_eq!(agent_cpus(&Pin::None, &[0, 1], &[1]).unwrap().0, None);
    }

    #[test]
    fn an_explicit_list_is_checked_and_a_router_cpu_in_it_is_named() {
        let (cpus, why) = agent_cpus(&Pin::Cpus(vec![0, 1]), &[0, 1], &[1]).unwrap();
        assert_eq!(cpus, Some(vec![0, 1]));
        assert!(why.contains("router cpus"), "{why}");
        let err = agent_cpus(&Pin::Cpus(vec![0, 9]), &[0, 1], &[1]).unwrap_err();
        assert!(err.contains("cpus 9"), "{err}");
    }

    #[test]
    fn parses_lists_ranges_and_words() {
        assert_eq!("auto".parse::<Pin>().unwrap(), Pin::Auto);
        assert_eq!("none".parse::<Pin>().unwrap(), Pin::None);
        assert_eq!(
            " 3, 0-1 ,1".parse::<Pin>().unwrap(),
            Pin::Cpus(vec![0, 1, 3])
        );
        for bad in ["", "x", "1-", "2-1", "-1"] {
            assert!(bad.parse::<Pin>().is_err(), "{bad:?} accepted");
        }
    }
}
