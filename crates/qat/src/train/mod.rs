//! The QAT trial: data, the `loss.extra` term, health checks, outputs and the loop itself. The
//! optimizer, the generic losses and the checkpoints are `autoqat-toolkit`'s.

pub mod data;
pub mod health;
pub mod loss;
pub mod outputs;
pub mod traces;
pub mod trial;

pub use outputs::{read_steps, StepRow, Summary, STEPS_COLUMNS};
pub use trial::{run_trial, TrialOptions};
