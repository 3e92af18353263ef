//! The QAT trial: data, optimizer, losses, checkpoints, outputs and the loop itself.

pub mod checkpoint;
pub mod data;
pub mod health;
pub mod loss;
pub mod optim;
pub mod outputs;
pub mod traces;
pub mod trial;

pub use outputs::{read_steps, StepRow, Summary, STEPS_COLUMNS};
pub use trial::{run_trial, TrialOptions};
