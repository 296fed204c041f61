//! The `tidex` command line: wiring only. Specs, runtime and connectors
//! live in `tidex-engine` and `tidex-connectors`.

mod cli;
mod report;

// Batches are allocated and freed at a high rate; mimalloc keeps freed
// pages for reuse instead of returning them to the kernel each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
