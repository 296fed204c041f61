//! The `tidex` command line: wiring only. Specs, runtime and connectors
//! live in `tidex-engine` and `tidex-connectors`.

mod cli;
mod report;

fn main() {
    std::process::exit(cli::main());
}
