//! focal-retinanet (in progress)
