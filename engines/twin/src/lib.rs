//! agentwire-twin: the digital twin engine as a library with a plain Rust API.
//!
//! - [`mirror`]: the daemon's live state, read from its stats segment without stopping
//!   anyone, each slot labelled by the names file beside it.
//! - [`forecast`]: statistical forecasters (the M4 benchmarks, Holt-Winters, Theta, an
//!   ensemble) with prediction intervals.
//! - [`m4`]: the M4 competition's data layout and metrics (sMAPE, MASE, OWA), and an
//!   evaluation of the forecasters against Naive2.
//! - [`history`]: an on-disk store of named series with tiers of resolution, retention,
//!   downsampling and a bound on its size, recovering from torn or corrupt files.
//! - [`alerts`]: failure prediction on the live history: watched signals, their crossing
//!   probability, the alert JSON the daemon publishes.
//! - [`risk`]: failure prediction: the probability that a signal crosses a threshold within
//!   each of the next steps, and the first crossing's expected step with an interval.
//! - [`signals`]: the series the twin keeps, derived from successive mirror reads (rates,
//!   the router's busy ratio, gauges).
//! - [`series_csv`]: one series read from a CSV file's `value` column, and forecasts
//!   written as `step,forecast,lo,hi`.
//! - [`whatif`]: what-if simulation: a queueing model of the daemon calibrated from the
//!   mirror, scenarios, and packet-level and flow-level simulators.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod forecast;
pub mod history;
pub mod m4;
pub mod mirror;
pub mod risk;
pub mod series_csv;
pub mod signals;
pub mod whatif;
