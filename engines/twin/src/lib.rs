//! agentwire-twin: the digital twin engine as a library with a plain Rust API.
//!
//! - [`forecast`]: statistical forecasters (the M4 benchmarks, Holt-Winters, Theta, an
//!   ensemble) with prediction intervals.
//! - [`m4`]: the M4 competition's data layout and metrics (sMAPE, MASE, OWA), and an
//!   evaluation of the forecasters against Naive2.
//! - [`series_csv`]: one series read from a CSV file's `value` column, and forecasts
//!   written as `step,forecast,lo,hi`.

#![forbid(unsafe_code)]

pub mod forecast;
pub mod m4;
pub mod series_csv;
