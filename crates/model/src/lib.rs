//! autoqat-model
