//! Cross-crate examples, benches and tests of CommandCenter Hub live beside this crate.
