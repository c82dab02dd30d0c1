use clap::Parser;
use ecoledger::cli::Cli;

/// Allocations at least this large are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: libc::c_int = 4 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    return_large_allocations_to_the_system();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run())
}

async fn run() -> std::process::ExitCode {
    ecoledger::telemetry::init();
    let cli = Cli::parse();
    match cli.run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so
/// after the first Argon2 hash every 19 MiB hash buffer came from a thread's heap arena and
/// stayed there: 200 registrations left the server at 580 MiB resident. A fixed threshold
/// keeps such buffers mapped on their own, given back as soon as they are freed.
fn return_large_allocations_to_the_system() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}
