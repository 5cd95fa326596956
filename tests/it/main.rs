//! The one integration-test binary: the real `lock-exec` binary against real
//! DynamoDB-compatible servers (dynalite and moto), started per test by the harness.

mod harness;
mod podman;
mod records;

mod bad_input;
mod bench;
mod containers;
mod contention;
mod documented;
mod eks;
mod faults;
mod packaging;
mod protocol;
mod safety;
mod slots;
mod supervisor;
mod tls;
