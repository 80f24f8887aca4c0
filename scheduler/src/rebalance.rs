//! Rebalancing: engine partitions lend idle cores to busy ones and take them back.
//!
//! Every sample interval the daemon measures each engine partition's busy ratio (the time
//! its active executors spent running jobs over the time they had) and calls
//! [`Rebalancer::step`]. The policy:
//!
//! - **Borrow.** A partition busier than `high_water` takes one core from a partition of
//!   *lower priority* that is idler than `low_water`: a core of the lender's own plan that
//!   the lender still runs on, that is no router or housekeeping core, that the borrower
//!   does not already run on, and never the lender's last core. Cores on the borrower's
//!   NUMA node first, then the lowest-priority lender, the idlest, the lowest CPU number.
//!   One core per partition per step.
//! - **Return.** A loan ends when the borrower falls below `low_water` (it no longer needs
//!   the core) or the lender rises above `high_water` (it reclaims its own), and only once
//!   the loan is `min_hold` old.
//! - **Hysteresis.** Between the two marks nothing moves; a partition that moved a core
//!   waits `min_hold` before it borrows again, so one burst does not take every idle core
//!   before the first loan shows its effect.
//! - The router neither lends nor borrows: its shards own agents' rings.
//!
//! Every move is a [`CoreMove`] with the reason in words; the daemon logs it and shows the
//! last ones in `agentwire status`.
//!
//! ```
//! use agentwire_scheduler::rebalance::{Member, RebalanceConfig, Rebalancer};
//! use std::time::Duration;
//! let members = vec![
//!     Member::new("streaming", 5, &[(2, Some(0))]),
//!     Member::new("twin", 1, &[(3, Some(0)), (4, Some(0))]),
//! ];
//! let mut r = Rebalancer::new(members, &[0, 1], RebalanceConfig::default());
//! let moves = r.step(Duration::from_secs(1), &[0.97, 0.02]);
//! assert_eq!((moves[0].cpu, moves[0].to.as_str()), (3, "streaming"));
//! assert_eq!(r.cpus(0), vec![2, 3]);
//! ```

use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Rebalancing settings (the `[rebalance]` table).
///
/// ```
/// let c = agentwire_scheduler::rebalance::RebalanceConfig::default();
/// assert!(c.low_water < c.high_water);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebalanceConfig {
    /// Move cores at all.
    pub enabled: bool,
    /// Busy ratio above which a partition borrows (or a lender reclaims), 0-1.
    pub high_water: f64,
    /// Busy ratio below which a partition may lend (or a borrower returns), 0-1.
    pub low_water: f64,
    /// Least time a loan lasts, and between two moves of one partition, in milliseconds.
    pub min_hold_ms: u64,
    /// How often busy ratios are sampled, in milliseconds.
    pub sample_ms: u64,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            high_water: 0.85,
            low_water: 0.30,
            min_hold_ms: 5_000,
            sample_ms: 250,
        }
    }
}

impl RebalanceConfig {
    /// Checks `0 <= low_water < high_water <= 1` and a sample interval of 10 ms to 60 s.
    ///
    /// ```
    /// let mut c = agentwire_scheduler::rebalance::RebalanceConfig::default();
    /// c.low_water = 0.9;
    /// assert!(c.validate().unwrap_err().contains("low_water"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.low_water)
            || !(0.0..=1.0).contains(&self.high_water)
            || self.low_water >= self.high_water
        {
            return Err(format!(
                "[rebalance] low_water = {} and high_water = {}: need 0 <= low_water < high_water <= 1",
                self.low_water, self.high_water
            ));
        }
        if !(10..=60_000).contains(&self.sample_ms) {
            return Err(format!(
                "[rebalance] sample_ms = {}: need 10 to 60000",
                self.sample_ms
            ));
        }
        Ok(())
    }

    /// The minimum hold as a duration.
    ///
    /// ```
    /// assert_eq!(agentwire_scheduler::rebalance::RebalanceConfig::default().min_hold().as_secs(), 5);
    /// ```
    pub fn min_hold(&self) -> Duration {
        Duration::from_millis(self.min_hold_ms)
    }

    /// The sample interval as a duration.
    ///
    /// ```
    /// assert_eq!(agentwire_scheduler::rebalance::RebalanceConfig::default().sample_interval().as_millis(), 250);
    /// ```
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_ms)
    }
}

/// One engine partition as the rebalancer sees it: name, priority and its planned cores.
///
/// ```
/// let m = agentwire_scheduler::rebalance::Member::new("twin", 1, &[(3, Some(0))]);
/// assert_eq!(m.home, vec![3]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Partition name.
    pub name: String,
    /// Higher borrows from lower.
    pub priority: u8,
    /// Its planned executor CPUs.
    pub home: Vec<usize>,
    /// NUMA node of each home CPU.
    pub home_numa: Vec<Option<u32>>,
}

impl Member {
    /// A member from `(cpu, numa node)` pairs.
    ///
    /// ```
    /// let m = agentwire_scheduler::rebalance::Member::new("nas", 2, &[(4, None), (5, None)]);
    /// assert_eq!(m.priority, 2);
    /// ```
    pub fn new(name: &str, priority: u8, home: &[(usize, Option<u32>)]) -> Self {
        Self {
            name: name.to_string(),
            priority,
            home: home.iter().map(|h| h.0).collect(),
            home_numa: home.iter().map(|h| h.1).collect(),
        }
    }
}

/// Borrowed or given back.
///
/// ```
/// assert_eq!(agentwire_scheduler::rebalance::MoveKind::Borrow.to_string(), "borrow");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveKind {
    /// A busy partition takes an idle partition's core.
    Borrow,
    /// The core goes back to the partition that planned it.
    Return,
}

impl std::fmt::Display for MoveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MoveKind::Borrow => "borrow",
            MoveKind::Return => "return",
        })
    }
}

/// One core moving from one partition's executor to another's.
///
/// ```
/// # use agentwire_scheduler::rebalance::{CoreMove, MoveKind};
/// let m = CoreMove { at: std::time::Duration::from_millis(1500), cpu: 3, from: "twin".into(), to: "streaming".into(), kind: MoveKind::Borrow, reason: "busy".into() };
/// assert_eq!(m.line(), "t+1.500s cpu 3: twin -> streaming (borrow: busy)");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoreMove {
    /// When, since the rebalancer started.
    pub at: Duration,
    /// The CPU that moves.
    pub cpu: usize,
    /// The partition that stops running on it.
    pub from: String,
    /// The partition that starts running on it.
    pub to: String,
    /// Borrow or return.
    pub kind: MoveKind,
    /// Why, with the busy ratios and marks that decided it.
    pub reason: String,
}

impl CoreMove {
    /// One log line.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::{CoreMove, MoveKind};
    /// let m = CoreMove { at: std::time::Duration::ZERO, cpu: 1, from: "a".into(), to: "b".into(), kind: MoveKind::Return, reason: "idle".into() };
    /// assert!(m.line().contains("a -> b"));
    /// ```
    pub fn line(&self) -> String {
        format!(
            "t+{:.3}s cpu {}: {} -> {} ({}: {})",
            self.at.as_secs_f64(),
            self.cpu,
            self.from,
            self.to,
            self.kind,
            self.reason
        )
    }
}

/// A core lent by one member to another.
///
/// ```
/// # use agentwire_scheduler::rebalance::*;
/// let mut r = Rebalancer::new(vec![Member::new("a", 2, &[(1, None)]), Member::new("b", 1, &[(2, None), (3, None)])], &[], RebalanceConfig::default());
/// r.step(std::time::Duration::from_secs(9), &[1.0, 0.0]);
/// assert_eq!(r.loans()[0].lender, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loan {
    /// The CPU.
    pub cpu: usize,
    /// Member index of the partition that planned it.
    pub lender: usize,
    /// Member index of the partition running on it now.
    pub borrower: usize,
    /// When the loan began.
    pub since: Duration,
}

/// The rebalancing policy's state: members, loans and when each member last moved.
/// Deterministic: time is passed in, so a scripted load signal replays exactly.
///
/// ```
/// # use agentwire_scheduler::rebalance::*;
/// let r = Rebalancer::new(vec![Member::new("a", 1, &[(1, None)])], &[0], RebalanceConfig::default());
/// assert_eq!(r.cpus(0), vec![1]);
/// ```
#[derive(Debug, Clone)]
pub struct Rebalancer {
    config: RebalanceConfig,
    members: Vec<Member>,
    protected: Vec<usize>,
    loans: Vec<Loan>,
    last_move: Vec<Option<Duration>>,
}

impl Rebalancer {
    /// A rebalancer over `members`; `protected` CPUs (router cores, housekeeping) are never
    /// lent.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// let r = Rebalancer::new(vec![], &[0], RebalanceConfig::default());
    /// assert!(r.members().is_empty());
    /// ```
    pub fn new(members: Vec<Member>, protected: &[usize], config: RebalanceConfig) -> Self {
        let n = members.len();
        Self {
            config,
            members,
            protected: protected.to_vec(),
            loans: Vec::new(),
            last_move: vec![None; n],
        }
    }

    /// A rebalancer over a plan's engine partitions (every partition but the router); the
    /// router's PUs and housekeeping are protected.
    ///
    /// ```
    /// use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}, rebalance::*};
    /// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
    /// let r = Rebalancer::from_plan(&p, RebalanceConfig::default());
    /// assert_eq!(r.members().len(), 4);
    /// ```
    pub fn from_plan(plan: &Plan, config: RebalanceConfig) -> Self {
        let members = plan
            .partitions
            .iter()
            .filter(|p| p.name != "router")
            .map(|p| {
                let home: Vec<(usize, Option<u32>)> =
                    p.cores.iter().map(|c| (c.pu, c.numa_node)).collect();
                Member::new(&p.name, p.priority, &home)
            })
            .collect();
        let mut protected: Vec<usize> = plan
            .partitions
            .iter()
            .filter(|p| p.name == "router")
            .flat_map(|p| p.cores.iter().flat_map(|c| c.pus.iter().copied()))
            .collect();
        protected.extend(&plan.housekeeping);
        Self::new(members, &protected, config)
    }

    /// The members, in the order busy ratios are given.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// let r = Rebalancer::new(vec![Member::new("a", 1, &[(1, None)])], &[], RebalanceConfig::default());
    /// assert_eq!(r.members()[0].name, "a");
    /// ```
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The settings.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// let r = Rebalancer::new(vec![], &[], RebalanceConfig::default());
    /// assert!(r.config().enabled);
    /// ```
    pub fn config(&self) -> &RebalanceConfig {
        &self.config
    }

    /// Loans in force.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// assert!(Rebalancer::new(vec![], &[], RebalanceConfig::default()).loans().is_empty());
    /// ```
    pub fn loans(&self) -> &[Loan] {
        &self.loans
    }

    /// The CPUs member `index` runs on now: its home CPUs not lent, then those it borrowed.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// let r = Rebalancer::new(vec![Member::new("a", 1, &[(4, None), (5, None)])], &[], RebalanceConfig::default());
    /// assert_eq!(r.cpus(0), vec![4, 5]);
    /// ```
    pub fn cpus(&self, index: usize) -> Vec<usize> {
        let Some(member) = self.members.get(index) else {
            return Vec::new();
        };
        let mut cpus: Vec<usize> = member
            .home
            .iter()
            .copied()
            .filter(|&cpu| !self.loans.iter().any(|l| l.lender == index && l.cpu == cpu))
            .collect();
        cpus.extend(
            self.loans
                .iter()
                .filter(|l| l.borrower == index)
                .map(|l| l.cpu),
        );
        cpus
    }

    /// Ends the loan of `cpu` at once (the daemon could not start the borrower's executor
    /// there); returns whether there was one.
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// let mut r = Rebalancer::new(vec![], &[], RebalanceConfig::default());
    /// assert!(!r.cancel_loan(3));
    /// ```
    pub fn cancel_loan(&mut self, cpu: usize) -> bool {
        let before = self.loans.len();
        self.loans.retain(|l| l.cpu != cpu);
        before != self.loans.len()
    }

    fn held_long_enough(&self, member: usize, now: Duration) -> bool {
        self.last_move[member].is_none_or(|t| now.saturating_sub(t) >= self.config.min_hold())
    }

    /// One decision round: `busy[i]` is member `i`'s busy ratio over the last interval.
    /// Returns the moves to apply (returns first, then borrows).
    ///
    /// ```
    /// # use agentwire_scheduler::rebalance::*;
    /// # use std::time::Duration;
    /// let mut r = Rebalancer::new(vec![Member::new("a", 2, &[(1, None)]), Member::new("b", 1, &[(2, None), (3, None)])], &[], RebalanceConfig::default());
    /// assert_eq!(r.step(Duration::from_secs(1), &[0.5, 0.0]).len(), 0); // between the marks
    /// assert_eq!(r.step(Duration::from_secs(2), &[0.9, 0.0]).len(), 1); // a borrows
    /// ```
    pub fn step(&mut self, now: Duration, busy: &[f64]) -> Vec<CoreMove> {
        let mut moves = Vec::new();
        if !self.config.enabled || busy.len() != self.members.len() {
            return moves;
        }
        let (high, low) = (self.config.high_water, self.config.low_water);
        let name = |i: usize| self.members[i].name.clone();
        // Returns first: a loan old enough ends when the borrower idles or the lender is busy.
        let mut ended = Vec::new();
        for (i, loan) in self.loans.iter().enumerate() {
            if now.saturating_sub(loan.since) < self.config.min_hold() {
                continue;
            }
            let (b, l) = (busy[loan.borrower], busy[loan.lender]);
            let reason = if b < low {
                format!("{} busy {b:.2} < low water {low:.2}", name(loan.borrower))
            } else if l > high {
                format!(
                    "{} busy {l:.2} > high water {high:.2}, reclaims its core",
                    name(loan.lender)
                )
            } else {
                continue;
            };
            ended.push(i);
            moves.push(CoreMove {
                at: now,
                cpu: loan.cpu,
                from: name(loan.borrower),
                to: name(loan.lender),
                kind: MoveKind::Return,
                reason,
            });
        }
        for &i in ended.iter().rev() {
            let loan = self.loans.remove(i);
            self.last_move[loan.borrower] = Some(now);
            self.last_move[loan.lender] = Some(now);
        }
        // Borrows: higher priority first, then the busiest.
        let mut wanting: Vec<usize> = (0..self.members.len())
            .filter(|&m| busy[m] > high && self.held_long_enough(m, now))
            .collect();
        wanting.sort_by(|&a, &b| {
            self.members[b]
                .priority
                .cmp(&self.members[a].priority)
                .then(busy[b].total_cmp(&busy[a]))
        });
        for borrower in wanting {
            let Some((cpu, lender)) = self.pick_core(borrower, busy) else {
                continue;
            };
            self.loans.push(Loan {
                cpu,
                lender,
                borrower,
                since: now,
            });
            self.last_move[borrower] = Some(now);
            self.last_move[lender] = Some(now);
            moves.push(CoreMove {
                at: now,
                cpu,
                from: name(lender),
                to: name(borrower),
                kind: MoveKind::Borrow,
                reason: format!(
                    "{} busy {:.2} > high water {high:.2}; {} busy {:.2} < low water {low:.2}",
                    name(borrower),
                    busy[borrower],
                    name(lender),
                    busy[lender]
                ),
            });
        }
        moves
    }

    /// The best core for `borrower`, with its lender, if any may be lent.
    fn pick_core(&self, borrower: usize, busy: &[f64]) -> Option<(usize, usize)> {
        let own = self.cpus(borrower);
        let own_numa: Vec<Option<u32>> = self.members[borrower].home_numa.clone();
        // (sort key, cpu, lender); the key sorts NUMA-near, lowest priority, idlest, lowest CPU.
        type Candidate = ((bool, u8, u64, usize), usize, usize);
        let mut best: Option<Candidate> = None;
        for (lender, member) in self.members.iter().enumerate() {
            if lender == borrower
                || member.priority >= self.members[borrower].priority
                || busy[lender] >= self.config.low_water
            {
                continue;
            }
            let keeps = self.cpus(lender);
            if keeps.len() <= 1 {
                continue;
            }
            for (slot, &cpu) in member.home.iter().enumerate() {
                let lendable = keeps.contains(&cpu)
                    && !own.contains(&cpu)
                    && !self.protected.contains(&cpu)
                    && !self.loans.iter().any(|l| l.cpu == cpu);
                if !lendable {
                    continue;
                }
                let near = own_numa.contains(&member.home_numa[slot]);
                let key = (!near, member.priority, (busy[lender] * 1e6) as u64, cpu);
                if best.as_ref().is_none_or(|b| key < b.0) {
                    best = Some((key, cpu, lender));
                }
            }
        }
        best.map(|(_, cpu, lender)| (cpu, lender))
    }
}
