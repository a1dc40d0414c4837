//! Placeholder until the disc benchmark lands.
fn main() {}
