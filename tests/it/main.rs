//! The one integration-test binary: the real `lock-exec` binary against real
//! DynamoDB-compatible servers (dynalite and moto), started per test by the harness.

mod harness;

mod bad_input;
mod contention;
mod faults;
mod packaging;
mod protocol;
mod safety;
mod supervisor;
