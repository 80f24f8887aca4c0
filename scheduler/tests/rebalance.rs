//! Rebalancing driven by scripted load signals: busy ratios per partition over time, replayed
//! through the policy, with the exact moves expected.

use agentwire_scheduler::machine::MachineBuilder;
use agentwire_scheduler::plan::{plan, PlanConfig};
use agentwire_scheduler::rebalance::{CoreMove, Member, MoveKind, RebalanceConfig, Rebalancer};
use std::time::Duration;

fn config() -> RebalanceConfig {
    RebalanceConfig {
        enabled: true,
        high_water: 0.85,
        low_water: 0.30,
        min_hold_ms: 2_000,
        sample_ms: 250,
    }
}

/// streaming (priority 5) on cpus 2-3, twin (1) on 4-6, nas (3) on 7, fusion (1) on 8-9.
fn members() -> Vec<Member> {
    vec![
        Member::new("streaming", 5, &[(2, Some(0)), (3, Some(0))]),
        Member::new("twin", 1, &[(4, Some(0)), (5, Some(0)), (6, Some(1))]),
        Member::new("nas", 3, &[(7, Some(1))]),
        Member::new("fusion", 1, &[(8, Some(1)), (9, Some(1))]),
    ]
}

/// Replays `script` (time in ms, busy ratios) and returns every move with its time.
fn replay(r: &mut Rebalancer, script: &[(u64, [f64; 4])]) -> Vec<CoreMove> {
    let mut all = Vec::new();
    for (ms, busy) in script {
        all.extend(r.step(Duration::from_millis(*ms), busy));
    }
    all
}

fn summary(moves: &[CoreMove]) -> Vec<(u64, usize, &str, &str, MoveKind)> {
    moves
        .iter()
        .map(|m| {
            (
                m.at.as_millis() as u64,
                m.cpu,
                m.from.as_str(),
                m.to.as_str(),
                m.kind,
            )
        })
        .collect()
}

#[test]
fn a_burst_borrows_one_core_per_hold_and_returns_them_when_it_ends() {
    let mut r = Rebalancer::new(members(), &[0, 1], config());
    // streaming saturates from t=1s to t=7s; everyone else idles.
    let mut script = Vec::new();
    for step in 0..=60u64 {
        let ms = step * 250;
        let streaming = if (1_000..7_000).contains(&ms) {
            0.98
        } else {
            0.05
        };
        script.push((ms, [streaming, 0.02, 0.10, 0.01]));
    }
    let moves = replay(&mut r, &script);
    assert_eq!(
        summary(&moves),
        vec![
            // Borrows: NUMA-near first (cpu 4 and 5 of twin on node 0), one per hold time.
            (1_000, 4, "twin", "streaming", MoveKind::Borrow),
            (3_000, 5, "twin", "streaming", MoveKind::Borrow),
            // Then twin is down to its last core; fusion (priority 1, node 1) lends.
            (5_000, 8, "fusion", "streaming", MoveKind::Borrow),
            // Burst over at 7 s: loans at least 2 s old go back at once, the newest when
            // its hold time is up.
            (7_000, 4, "streaming", "twin", MoveKind::Return),
            (7_000, 5, "streaming", "twin", MoveKind::Return),
            (7_000, 8, "streaming", "fusion", MoveKind::Return),
        ]
    );
    assert!(moves[0]
        .reason
        .contains("streaming busy 0.98 > high water 0.85"));
    assert!(moves[0].reason.contains("twin busy 0.02 < low water 0.30"));
    assert!(moves[3]
        .reason
        .contains("streaming busy 0.05 < low water 0.30"));
    assert_eq!(r.cpus(0), vec![2, 3]);
    assert_eq!(r.cpus(1), vec![4, 5, 6]);
    assert!(r.loans().is_empty());
}

#[test]
fn nothing_moves_between_the_marks_or_before_the_hold_time() {
    let mut r = Rebalancer::new(members(), &[0, 1], config());
    // Hovering between the marks: no borrow, however long.
    let hovering: Vec<(u64, [f64; 4])> = (0..40u64)
        .map(|i| (i * 250, [0.80, 0.02, 0.1, 0.0]))
        .collect();
    assert!(replay(&mut r, &hovering).is_empty());
    // One spike borrows; the dip right after does not return the core before the hold.
    let moves = replay(
        &mut r,
        &[
            (10_000, [0.95, 0.02, 0.1, 0.0]),
            (10_250, [0.10, 0.02, 0.1, 0.0]),
            (11_000, [0.10, 0.02, 0.1, 0.0]),
            (11_999, [0.95, 0.02, 0.1, 0.0]),
        ],
    );
    assert_eq!(
        summary(&moves),
        vec![(10_000, 4, "twin", "streaming", MoveKind::Borrow)]
    );
    // Busy again inside the band after the hold: the loan stays.
    assert!(replay(&mut r, &[(12_500, [0.50, 0.02, 0.1, 0.0])]).is_empty());
    let back = replay(&mut r, &[(12_750, [0.20, 0.02, 0.1, 0.0])]);
    assert_eq!(
        summary(&back),
        vec![(12_750, 4, "streaming", "twin", MoveKind::Return)]
    );
}

#[test]
fn a_lender_that_gets_busy_reclaims_its_core_after_the_hold() {
    let mut r = Rebalancer::new(members(), &[0, 1], config());
    let moves = replay(
        &mut r,
        &[
            (0, [0.99, 0.0, 0.0, 0.0]),
            (1_000, [0.99, 0.95, 0.0, 0.0]), // twin busy, but the loan is young
            (2_000, [0.99, 0.95, 0.0, 0.0]),
        ],
    );
    assert_eq!(
        summary(&moves),
        vec![
            (0, 4, "twin", "streaming", MoveKind::Borrow),
            (2_000, 4, "streaming", "twin", MoveKind::Return),
        ]
    );
    assert!(moves[1].reason.contains("twin busy 0.95 > high water"));
    // At 2 s streaming is still saturated but just moved: it waits for its hold time, and
    // twin is no lender while busy, so fusion lends next.
    let later = replay(&mut r, &[(4_000, [0.99, 0.95, 0.0, 0.0])]);
    assert_eq!(
        summary(&later),
        vec![(4_000, 8, "fusion", "streaming", MoveKind::Borrow)]
    );
}

#[test]
fn priorities_decide_who_borrows_and_who_lends() {
    let mut r = Rebalancer::new(members(), &[0, 1], config());
    // twin (priority 1) busy, streaming (5) idle: twin may not borrow from a higher
    // priority; fusion has the same priority, so not from it either.
    assert!(replay(&mut r, &[(0, [0.0, 0.99, 0.0, 0.0])]).is_empty());
    // nas (3) busy: borrows from the lower ones, never from streaming (5).
    let moves = replay(&mut r, &[(1_000, [0.0, 0.0, 0.99, 0.0])]);
    // nas is on node 1: fusion's cpu 8 (node 1) beats twin's cpus on node 0; twin's cpu 6
    // is on node 1 too and twin has the same priority as fusion, and is as idle: the lower
    // CPU number wins.
    assert_eq!(
        summary(&moves),
        vec![(1_000, 6, "twin", "nas", MoveKind::Borrow)]
    );
    // Both busy at once: the higher priority picks first.
    let mut r = Rebalancer::new(members(), &[0, 1], config());
    let moves = replay(&mut r, &[(0, [0.99, 0.0, 0.99, 0.0])]);
    assert_eq!(moves[0].to, "streaming");
    assert_eq!(moves[1].to, "nas");
}

#[test]
fn protected_and_last_cores_are_never_lent_and_disabled_means_still() {
    // twin's cpu 4 is protected (say it is shared with housekeeping); twin has 3 cores.
    let mut r = Rebalancer::new(members(), &[0, 1, 4], config());
    let moves = replay(&mut r, &[(0, [0.99, 0.0, 0.0, 0.0])]);
    assert_eq!(moves[0].cpu, 5);
    // A partition with one core never lends it.
    let one = vec![
        Member::new("streaming", 5, &[(2, None)]),
        Member::new("twin", 1, &[(3, None)]),
    ];
    let mut r = Rebalancer::new(one, &[], config());
    assert!(r.step(Duration::ZERO, &[1.0, 0.0]).is_empty());
    let mut off = config();
    off.enabled = false;
    let mut r = Rebalancer::new(members(), &[], off);
    assert!(replay(&mut r, &[(0, [1.0, 0.0, 0.0, 0.0])]).is_empty());
}

#[test]
fn from_a_plan_the_router_and_housekeeping_are_left_out() {
    let machine = MachineBuilder::new("8").cores(0, 8, 1).build();
    let config = PlanConfig::from_toml(
        "[partitions.router]\nany = 1\n[partitions.streaming]\nany = 2\npriority = 4\n[partitions.twin]\nany = 3\n",
    )
    .unwrap();
    let p = plan(&machine, &config).unwrap();
    let mut r = Rebalancer::from_plan(&p, RebalanceConfig::default());
    let names: Vec<&str> = r.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["streaming", "twin"]);
    let moves = r.step(Duration::from_secs(1), &[0.99, 0.0]);
    assert_eq!(moves.len(), 1);
    let router = p.partition("router").unwrap().executor_pus();
    assert!(!router.contains(&moves[0].cpu) && !p.housekeeping.contains(&moves[0].cpu));
    assert_eq!(r.cpus(0).len(), 3);
}

#[test]
fn invalid_marks_are_refused_with_the_rule() {
    let c = RebalanceConfig {
        high_water: 1.5,
        ..Default::default()
    };
    assert!(c.validate().unwrap_err().contains("high_water"));
    let c = RebalanceConfig {
        sample_ms: 1,
        ..Default::default()
    };
    assert!(c.validate().unwrap_err().contains("sample_ms"));
    let parsed: RebalanceConfig = toml::from_str("high_water = 0.9\nmin_hold_ms = 100").unwrap();
    assert_eq!((parsed.high_water, parsed.min_hold_ms), (0.9, 100));
    assert!(toml::from_str::<RebalanceConfig>("hi_water = 0.9").is_err());
}
