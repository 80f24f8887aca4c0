//! The priority-lane policy: which class a duty cycle serves first.

use crate::config::LANE_WEIGHTS;
use agentwire_shm::segment::TX_LANES;

/// The order in which one duty cycle serves the priority classes: first the class picked by
/// smooth weighted round robin among `backlog`ged classes (each adds its weight to its
/// counter, the largest counter goes first and gives back the sum of the weights), then the
/// rest in priority order. With no contention, plain priority order.
pub(crate) fn lane_order(
    current: &mut [i64; TX_LANES],
    backlog: &[bool; TX_LANES],
) -> [usize; TX_LANES] {
    let mut order = [0, 1, 2, 3];
    let total: i64 = (0..TX_LANES)
        .filter(|&c| backlog[c])
        .map(|c| i64::from(LANE_WEIGHTS[c]))
        .sum();
    let contending = backlog.iter().filter(|&&b| b).count();
    if contending < 2 {
        return order;
    }
    let mut pick = 0;
    let mut best = i64::MIN;
    for c in 0..TX_LANES {
        if backlog[c] {
            current[c] += i64::from(LANE_WEIGHTS[c]);
            if current[c] > best {
                best = current[c];
                pick = c;
            }
        }
    }
    current[pick] -= total;
    order.copy_within(0..pick, 1);
    order[0] = pick;
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn first_picks(backlog: [bool; TX_LANES], cycles: usize) -> [usize; TX_LANES] {
        let mut current = [0; TX_LANES];
        let mut picks = [0; TX_LANES];
        for _ in 0..cycles {
            let order = lane_order(&mut current, &backlog);
            let mut sorted = order;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "every class is served every cycle");
            picks[order[0]] += 1;
        }
        picks
    }

    #[test]
    pub(crate) fn contending_classes_go_first_by_weight_and_none_starves() {
        assert_eq!(first_picks([true; 4], 15), [8, 4, 2, 1]);
        assert_eq!(first_picks([true; 4], 150), [80, 40, 20, 10]);
        assert_eq!(first_picks([true, false, false, true], 90), [80, 0, 0, 10]);
        // Every window of 15 cycles gives the least urgent class its turn.
        let mut current = [0; TX_LANES];
        let firsts: Vec<usize> = (0..150)
            .map(|_| lane_order(&mut current, &[true; 4])[0])
            .collect();
        assert!(firsts.windows(15).all(|w| w.contains(&3)));
    }

    #[test]
    pub(crate) fn without_contention_the_order_is_plain_priority() {
        let mut current = [0; TX_LANES];
        assert_eq!(lane_order(&mut current, &[false; 4]), [0, 1, 2, 3]);
        assert_eq!(
            lane_order(&mut current, &[false, false, true, false]),
            [0, 1, 2, 3]
        );
        assert_eq!(current, [0; TX_LANES]);
    }
}
