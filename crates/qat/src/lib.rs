//! autoqat-qat
