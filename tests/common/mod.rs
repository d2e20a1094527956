//! Helpers shared by integration tests.
pub mod cli;
pub mod device;
pub mod pty;
