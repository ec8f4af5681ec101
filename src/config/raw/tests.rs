//! Unit tests of the raw shape.
