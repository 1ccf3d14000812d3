//! The `demo-service` binary: a thin wrapper that hands its arguments to the library.
//!
//! Usage: `demo-service [--port N]`; without `--port` the port comes from `PORT`, which is how
//! rollgate's process driver passes it.

fn main() {
    std::process::exit(demo_service::run_main(std::env::args().skip(1)));
}
