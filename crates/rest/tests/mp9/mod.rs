//! The TestScript runner of `nictiz_mp9.rs`: Touchstone variables and dates, and the runner.

pub mod dates;
pub mod runner;
