//! What-if scenarios: changes to a [`Model`], parsed from `KEY=VALUE` text.
//!
//! | Scenario | Meaning |
//! |---|---|
//! | `load=K` | every flow's rate times K |
//! | `router_cores=N`, `router_cores=+N`, `router_cores=-N` | router shards set, added or removed |
//! | `agents=+N` | N more producer/consumer pairs, each at the mean flow's rate and mix |
//! | `priority_mix=A,B,C,D` | every flow's frames split over classes 0 to 3 in these proportions |
//! | `ring_frames=N` | consumers' rx rings of N frames |
//! | `deferral_frames=N` | consumers' deferrals of N frames |
//! | `partition.NAME=N`, `=+N`, `=-N` | an engine partition's cores set, added or removed |

use super::model::{Flow, Model, CLASSES, FLOWS_MAX, ROUTER_CORES_MAX};
use std::fmt;

/// One change to a model.
///
/// ```
/// use agentwire_twin::whatif::{Model, Scenario};
/// let mut m = Model::example();
/// "load=2".parse::<Scenario>().unwrap().apply(&mut m).unwrap();
/// assert_eq!(m.offered_per_s(), 80_000.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// Every flow's rate times this.
    Load(f64),
    /// Router shards.
    RouterCores(Count),
    /// More producer/consumer pairs.
    AgentsAdded(u32),
    /// Proportions of frames per priority class.
    PriorityMix([f64; CLASSES]),
    /// Consumers' rx ring size in frames.
    RingFrames(u32),
    /// Consumers' deferral size in frames.
    DeferralFrames(u32),
    /// An engine partition's cores.
    PartitionCores(String, Count),
}

/// A count set outright or changed by a signed amount.
///
/// ```
/// use agentwire_twin::whatif::Count;
/// assert_eq!(Count::Delta(-1).applied_to(3), Some(2));
/// assert_eq!(Count::Delta(-4).applied_to(3), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Set(u32),
    /// This many more (or fewer).
    Delta(i64),
}

impl Count {
    /// The count after the change, or `None` below zero.
    ///
    /// ```
    /// assert_eq!(agentwire_twin::whatif::Count::Set(4).applied_to(1), Some(4));
    /// ```
    pub fn applied_to(self, current: u32) -> Option<u32> {
        match self {
            Count::Set(n) => Some(n),
            Count::Delta(d) => i64::from(current)
                .checked_add(d)
                .and_then(|n| u32::try_from(n).ok()),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let signed = text.starts_with('+') || text.starts_with('-');
        if signed {
            text.parse::<i64>()
                .map(Count::Delta)
                .map_err(|_| format!("'{text}' is not a signed count"))
        } else {
            text.parse::<u32>()
                .map(Count::Set)
                .map_err(|_| format!("'{text}' is not a count"))
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Set(n) => write!(f, "{n}"),
            Count::Delta(d) => write!(f, "{d:+}"),
        }
    }
}

/// A scenario that cannot be parsed or applied.
///
/// ```
/// let e = "load".parse::<agentwire_twin::whatif::Scenario>().unwrap_err();
/// assert!(e.to_string().starts_with("bad scenario 'load'"));
/// ```
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad scenario '{text}': {why}")]
pub struct ScenarioError {
    /// The scenario as given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::str::FromStr for Scenario {
    type Err = ScenarioError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| ScenarioError {
            text: text.to_string(),
            why,
        };
        let (key, value) = text.split_once('=').ok_or_else(|| {
            err("expected KEY=VALUE (load, router_cores, agents, priority_mix, ring_frames, deferral_frames, partition.NAME)".into())
        })?;
        let (key, value) = (key.trim(), value.trim());
        let count = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("'{v}' is not a count"))
        };
        match key {
            "load" => match value.parse::<f64>() {
                Ok(k) if k.is_finite() && k >= 0.0 => Ok(Scenario::Load(k)),
                _ => Err(err(format!("'{value}' is not a factor of 0 or more"))),
            },
            "router_cores" => Count::parse(value).map(Scenario::RouterCores).map_err(err),
            "agents" => match value.strip_prefix('+').map(count) {
                Some(Ok(n)) => Ok(Scenario::AgentsAdded(n)),
                _ => Err(err(format!("'{value}' is not +N"))),
            },
            "priority_mix" => parse_mix(value).map(Scenario::PriorityMix).map_err(err),
            "ring_frames" => match count(value) {
                Ok(n) if n > 0 => Ok(Scenario::RingFrames(n)),
                _ => Err(err(format!("'{value}' is not a count of 1 or more"))),
            },
            "deferral_frames" => count(value).map(Scenario::DeferralFrames).map_err(err),
            _ => match key.strip_prefix("partition.") {
                Some(name) if !name.is_empty() => Count::parse(value)
                    .map(|c| Scenario::PartitionCores(name.to_string(), c))
                    .map_err(err),
                _ => Err(err(format!("unknown key '{key}'"))),
            },
        }
    }
}

fn parse_mix(value: &str) -> Result<[f64; CLASSES], String> {
    let parts: Vec<&str> = value.split(',').collect();
    if parts.len() != CLASSES {
        return Err(format!(
            "expected {CLASSES} proportions, got {}",
            parts.len()
        ));
    }
    let mut mix = [0.0; CLASSES];
    for (m, p) in mix.iter_mut().zip(parts) {
        *m = match p.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => return Err(format!("'{p}' is not a proportion of 0 or more")),
        };
    }
    let sum: f64 = mix.iter().sum();
    if sum <= 0.0 {
        return Err("the proportions sum to 0".into());
    }
    Ok(mix.map(|m| m / sum))
}

impl Scenario {
    /// Changes `model` as this scenario says (the rebalancing policy then moves partition
    /// cores, see [`rebalance`]).
    ///
    /// ```
    /// use agentwire_twin::whatif::{Model, Scenario};
    /// let mut m = Model::example();
    /// let s: Scenario = "router_cores=-1".parse().unwrap();
    /// assert!(s.apply(&mut m).unwrap_err().to_string().contains("at least one"));
    /// ```
    pub fn apply(&self, model: &mut Model) -> Result<(), ScenarioError> {
        let err = |why: &str| ScenarioError {
            text: self.to_string(),
            why: why.to_string(),
        };
        match self {
            Scenario::Load(k) => {
                for f in &mut model.flows {
                    f.class_rates_per_s = f.class_rates_per_s.map(|r| r * k);
                }
            }
            Scenario::RouterCores(c) => match c.applied_to(model.router_cores) {
                Some(n) if (1..=ROUTER_CORES_MAX).contains(&n) => model.router_cores = n,
                _ => {
                    return Err(err(&format!(
                        "the router needs at least one core and at most {ROUTER_CORES_MAX}"
                    )))
                }
            },
            Scenario::AgentsAdded(n) => {
                if model.flows.len().saturating_add(*n as usize) > FLOWS_MAX {
                    return Err(err(&format!("a model holds at most {FLOWS_MAX} flows")));
                }
                let flows = model.flows.len().max(1) as f64;
                let mut mean = [0.0; CLASSES];
                for f in &model.flows {
                    for (m, r) in mean.iter_mut().zip(f.class_rates_per_s) {
                        *m += r / flows;
                    }
                }
                model.flows.extend((0..*n).map(|_| Flow {
                    class_rates_per_s: mean,
                }));
            }
            Scenario::PriorityMix(mix) => {
                for f in &mut model.flows {
                    let rate = f.rate_per_s();
                    f.class_rates_per_s = mix.map(|m| m * rate);
                }
            }
            Scenario::RingFrames(n) => model.ring_frames = *n,
            Scenario::DeferralFrames(n) => model.deferral_frames = *n,
            Scenario::PartitionCores(name, c) => {
                let p = model
                    .partitions
                    .iter_mut()
                    .find(|p| &p.name == name)
                    .ok_or_else(|| err("no such partition in the model"))?;
                p.cpus = c
                    .applied_to(p.cpus)
                    .ok_or_else(|| err("fewer than zero cores"))?;
                rebalance(model);
            }
        }
        model.follow_load();
        Ok(())
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::Load(k) => write!(f, "load={k}"),
            Scenario::RouterCores(c) => write!(f, "router_cores={c}"),
            Scenario::AgentsAdded(n) => write!(f, "agents=+{n}"),
            Scenario::PriorityMix(m) => {
                write!(f, "priority_mix={},{},{},{}", m[0], m[1], m[2], m[3])
            }
            Scenario::RingFrames(n) => write!(f, "ring_frames={n}"),
            Scenario::DeferralFrames(n) => write!(f, "deferral_frames={n}"),
            Scenario::PartitionCores(name, c) => write!(f, "partition.{name}={c}"),
        }
    }
}

/// Applies the daemon's rebalancing policy until it settles: the busiest partition above
/// `high_water` borrows one core from the lowest-priority partition of a strictly lower
/// priority than its own that is below `low_water` and keeps a core. Returns the moves made,
/// as (lender, borrower).
///
/// ```
/// use agentwire_twin::whatif::{rebalance, Model, PartitionLoad};
/// let mut m = Model::example();
/// m.partitions = vec![
///     PartitionLoad { name: "streaming".into(), cpus: 1, busy_cores: 0.95, priority: 2 },
///     PartitionLoad { name: "nas".into(), cpus: 2, busy_cores: 0.1, priority: 1 },
/// ];
/// assert_eq!(rebalance(&mut m), vec![("nas".to_string(), "streaming".to_string())]);
/// assert_eq!(m.partitions[0].cpus, 2);
/// // Equal priorities never lend to each other (the engines' default).
/// m.partitions[0].priority = 1;
/// m.partitions[0].busy_cores = 2.0;
/// assert!(rebalance(&mut m).is_empty());
/// ```
pub fn rebalance(model: &mut Model) -> Vec<(String, String)> {
    let mut moves = Vec::new();
    if !model.rebalance.enabled {
        return moves;
    }
    let (high, low) = (model.rebalance.high_water, model.rebalance.low_water);
    // Every move takes a core from a partition that keeps one: bounded by the cores there are.
    let cores: u64 = model.partitions.iter().map(|p| u64::from(p.cpus)).sum();
    for _ in 0..cores {
        let borrower = model
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.utilisation() > high)
            .max_by(|a, b| a.1.utilisation().total_cmp(&b.1.utilisation()))
            .map(|(i, _)| i);
        let Some(b) = borrower else { break };
        let lender = model
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                *i != b
                    && p.cpus > 1
                    && p.priority < model.partitions[b].priority
                    && p.utilisation() < low
            })
            .min_by(|x, y| {
                (x.1.priority, x.1.utilisation())
                    .partial_cmp(&(y.1.priority, y.1.utilisation()))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, _)| i);
        let Some(l) = lender else { break };
        model.partitions[l].cpus -= 1;
        model.partitions[b].cpus += 1;
        moves.push((
            model.partitions[l].name.clone(),
            model.partitions[b].name.clone(),
        ));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatif::ServiceCurve;

    /// The example (40,000 frames/s on one core) with its time per frame measured there.
    fn measured() -> Model {
        let mut m = Model::example();
        m.router_service_ns = 9_000.0;
        m.service_curve = Some(ServiceCurve {
            measured_per_s: 40_000.0,
            measured_ns: 9_000.0,
            saturated_ns: 25.0,
        });
        m
    }

    #[test]
    fn scenarios_that_change_the_load_per_core_move_the_router_time() {
        let curve = measured().service_curve.unwrap();
        let mut m = measured();
        Scenario::Load(10.0).apply(&mut m).unwrap();
        assert_eq!(m.router_service_ns, curve.service_ns_at(400_000.0));
        assert!(m.router_service_ns < 9_000.0);
        // A second core halves the load per core.
        Scenario::RouterCores(Count::Delta(1))
            .apply(&mut m)
            .unwrap();
        assert_eq!(m.router_service_ns, curve.service_ns_at(200_000.0));
        // Agents added at the mean rate: twice the flows, twice the load per core.
        Scenario::AgentsAdded(2).apply(&mut m).unwrap();
        assert_eq!(m.router_service_ns, curve.service_ns_at(400_000.0));
        // Without a curve (a time given by hand) nothing moves it.
        let mut fixed = Model::example();
        Scenario::Load(10.0).apply(&mut fixed).unwrap();
        assert_eq!(fixed.router_service_ns, Model::example().router_service_ns);
    }
}
