//! Small, deterministic minimisers for fitting smoothing parameters: golden-section search
//! on an interval and Nelder-Mead in a box.
//!
//! Why written here rather than taken from a crate: the fits need two to four bounded
//! parameters, a fixed starting point and a fixed iteration limit, so that the same history
//! always gives the same forecast; the two methods below are 150 lines, have no randomness
//! and allocate nothing per iteration beyond the simplex.

/// The most objective evaluations [`nelder_mead`] spends before returning its best point.
///
/// ```
/// assert!(agentwire_twin::forecast::optimise::NELDER_MEAD_EVALS_MAX >= 100);
/// ```
pub const NELDER_MEAD_EVALS_MAX: usize = 400;

/// Golden-section iterations [`golden_section`] runs (each shrinks the interval by 0.618;
/// 40 take an interval of 1 below 1e-8).
///
/// ```
/// use agentwire_twin::forecast::optimise::GOLDEN_ITERATIONS_MAX;
/// assert!(0.618f64.powi(GOLDEN_ITERATIONS_MAX as i32) < 1e-8);
/// ```
pub const GOLDEN_ITERATIONS_MAX: usize = 40;

/// The minimum of a unimodal `f` on `[lo, hi]` by golden-section search: returns
/// `(x, f(x))`. With a non-unimodal `f` it returns a local minimum.
///
/// ```
/// use agentwire_twin::forecast::optimise::golden_section;
/// let (x, fx) = golden_section(|x| (x - 0.3) * (x - 0.3), 0.0, 1.0);
/// assert!((x - 0.3).abs() < 1e-6 && fx < 1e-12);
/// ```
pub fn golden_section(mut f: impl FnMut(f64) -> f64, lo: f64, hi: f64) -> (f64, f64) {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo.min(hi), lo.max(hi));
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let mut fc = sanitise(f(c));
    let mut fd = sanitise(f(d));
    for _ in 0..GOLDEN_ITERATIONS_MAX {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = sanitise(f(c));
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = sanitise(f(d));
        }
    }
    if fc < fd {
        (c, fc)
    } else {
        (d, fd)
    }
}

/// A NaN objective (a diverging fit) counts as the worst value, so the search moves away.
fn sanitise(v: f64) -> f64 {
    if v.is_nan() {
        f64::INFINITY
    } else {
        v
    }
}

/// The minimum of `f` over the box `lower..=upper` by Nelder-Mead, started at `start` with
/// a simplex spanning a tenth of each side; points leaving the box are clamped back onto
/// it. Returns `(x, f(x))` after at most [`NELDER_MEAD_EVALS_MAX`] evaluations, or sooner
/// once the simplex's values agree within 1e-10 (relative).
///
/// # Panics
///
/// When `lower` or `upper` has another length than `start` (a caller's bug, not data).
///
/// ```
/// use agentwire_twin::forecast::optimise::nelder_mead;
/// let f = |p: &[f64]| (p[0] - 0.2).powi(2) + 3.0 * (p[1] - 0.7).powi(2);
/// let (x, fx) = nelder_mead(f, &[0.5, 0.5], &[0.0, 0.0], &[1.0, 1.0]);
/// assert!((x[0] - 0.2).abs() < 1e-3 && (x[1] - 0.7).abs() < 1e-3 && fx < 1e-6);
/// ```
pub fn nelder_mead(
    mut f: impl FnMut(&[f64]) -> f64,
    start: &[f64],
    lower: &[f64],
    upper: &[f64],
) -> (Vec<f64>, f64) {
    let dims = start.len();
    assert!(
        lower.len() == dims && upper.len() == dims,
        "nelder_mead: bounds must have the start's {dims} dimensions"
    );
    let clamp = |p: &mut [f64]| {
        for (i, v) in p.iter_mut().enumerate() {
            *v = v.clamp(lower[i], upper[i]);
        }
    };
    let mut simplex: Vec<Vec<f64>> = Vec::with_capacity(dims + 1);
    let mut first = start.to_vec();
    clamp(&mut first);
    simplex.push(first.clone());
    for i in 0..dims {
        let mut p = first.clone();
        let step = 0.1 * (upper[i] - lower[i]);
        // Step inwards when the start sits on the upper bound.
        p[i] = if p[i] + step <= upper[i] {
            p[i] + step
        } else {
            p[i] - step
        };
        simplex.push(p);
    }
    let mut values: Vec<f64> = simplex.iter().map(|p| sanitise(f(p))).collect();
    let mut evals = dims + 1;
    let mut centroid = vec![0.0; dims];
    let mut trial = vec![0.0; dims];
    let mut trial2 = vec![0.0; dims];
    while evals < NELDER_MEAD_EVALS_MAX {
        // Order: best first. Ties keep their order (stable sort), so runs repeat exactly.
        let mut order: Vec<usize> = (0..=dims).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        simplex = order.iter().map(|&i| simplex[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();
        let (best, worst) = (values[0], values[dims]);
        if (worst - best).abs() <= 1e-10 * (best.abs() + 1e-20) {
            break;
        }
        for (j, c) in centroid.iter_mut().enumerate() {
            *c = simplex[..dims].iter().map(|p| p[j]).sum::<f64>() / dims as f64;
        }
        // Reflection.
        for j in 0..dims {
            trial[j] = centroid[j] + (centroid[j] - simplex[dims][j]);
        }
        clamp(&mut trial);
        let fr = sanitise(f(&trial));
        evals += 1;
        if fr < values[0] {
            // Expansion.
            for j in 0..dims {
                trial2[j] = centroid[j] + 2.0 * (centroid[j] - simplex[dims][j]);
            }
            clamp(&mut trial2);
            let fe = sanitise(f(&trial2));
            evals += 1;
            if fe < fr {
                simplex[dims].copy_from_slice(&trial2);
                values[dims] = fe;
            } else {
                simplex[dims].copy_from_slice(&trial);
                values[dims] = fr;
            }
            continue;
        }
        if fr < values[dims - 1] {
            simplex[dims].copy_from_slice(&trial);
            values[dims] = fr;
            continue;
        }
        // Contraction, outside when the reflection helped a little, else inside.
        let outside = fr < values[dims];
        for j in 0..dims {
            let towards = if outside { trial[j] } else { simplex[dims][j] };
            trial2[j] = centroid[j] + 0.5 * (towards - centroid[j]);
        }
        clamp(&mut trial2);
        let fc = sanitise(f(&trial2));
        evals += 1;
        if fc < values[dims].min(fr) {
            simplex[dims].copy_from_slice(&trial2);
            values[dims] = fc;
            continue;
        }
        // Shrink towards the best point.
        let (best, rest) = simplex.split_at_mut(1);
        for (point, value) in rest.iter_mut().zip(values.iter_mut().skip(1)) {
            for (x, b) in point.iter_mut().zip(&best[0]) {
                *x = b + 0.5 * (*x - b);
            }
            *value = sanitise(f(point));
            evals += 1;
        }
    }
    let best = (0..=dims)
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0);
    (simplex[best].clone(), values[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_section_finds_a_minimum_on_the_bound() {
        let (x, _) = golden_section(|x| x, 0.0, 1.0);
        assert!(x < 1e-6, "{x}");
    }

    #[test]
    fn nelder_mead_stays_in_the_box() {
        let (x, _) = nelder_mead(|p| -(p[0] + p[1]), &[0.5, 0.5], &[0.0, 0.0], &[1.0, 2.0]);
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 2.0).abs() < 1e-6,
            "{x:?}"
        );
    }

    #[test]
    fn nelder_mead_survives_a_nan_objective() {
        let f = |p: &[f64]| {
            if p[0] > 0.8 {
                f64::NAN
            } else {
                (p[0] - 0.5).powi(2)
            }
        };
        let (x, fx) = nelder_mead(f, &[0.9], &[0.0], &[1.0]);
        assert!(fx.is_finite() && (x[0] - 0.5).abs() < 1e-3, "{x:?} {fx}");
    }
}
