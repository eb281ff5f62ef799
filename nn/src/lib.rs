//! focal-nn (in progress)
