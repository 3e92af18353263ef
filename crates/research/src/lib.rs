//! autoqat-research
