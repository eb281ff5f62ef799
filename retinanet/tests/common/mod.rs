//! Helpers shared by the retinanet tests.

pub mod formula;
