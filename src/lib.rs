//! Umbrella package for the end-to-end tests in `tests/` and the load benchmark in `benches/`.
