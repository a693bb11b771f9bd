//! Behaviour tests for every provider preset and the generic schemes.
