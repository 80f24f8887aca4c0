//! The standard normal's upper tail, `Q(z) = P(Z > z)`, shared by the detectors.
//!
//! `std` has no `erfc`, so this uses the Chebyshev-fitted form from Numerical Recipes
//! (`erfcc`, fractional error below 1.2e-7 everywhere). The error is relative, so tiny tail
//! probabilities keep their order of magnitude instead of rounding to zero, which is what the
//! likelihood detector needs to tell a 1e-9 tail from a 1e-12 one.

/// Complementary error function, fractional error below 1.2e-7 for every `x`.
///
/// ```
/// use agentwire_streaming::detect::normal::erfc;
/// assert!((erfc(0.0) - 1.0).abs() < 1e-7);
/// assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
/// ```
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Upper tail of the standard normal: `Q(z) = 0.5 * erfc(z / sqrt(2))`.
///
/// ```
/// use agentwire_streaming::detect::normal::upper_tail;
/// assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
/// assert!((upper_tail(1.96) - 0.025).abs() < 1e-4);
/// ```
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_matches_known_values() {
        // Reference values of Q(z) from tables.
        for (z, q) in [
            (1.0, 0.158_655_25),
            (2.0, 0.022_750_13),
            (3.0, 0.001_349_898),
            (5.0, 2.866_516e-7),
        ] {
            assert!(((upper_tail(z) - q) / q).abs() < 2e-7, "z={z}");
        }
        assert!((upper_tail(-1.0) - (1.0 - 0.158_655_25)).abs() < 1e-7);
    }

    #[test]
    fn tiny_tails_stay_ordered() {
        assert!(upper_tail(10.0) > upper_tail(11.0));
        assert!(upper_tail(11.0) > 0.0);
    }
}
