//! The plugin against the sandbox API server, its pure rendering and wait logic from YAML
//! fixtures, and end to end through real kubectl with an in-process operator.
//! One test binary, so the harness is shared and linked once.

mod common;
mod e2e;
mod import;
mod render;
mod verbs;
