//! Renderers: library answers turned into what a person (or `--json`) reads. Commands call
//! them; they compute nothing a library test could not reach.

pub mod copy;
pub mod pipeline;
