//! focal-data (in progress)
