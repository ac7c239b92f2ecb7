/// The reader thread allocates every record and request, and the runtime's
/// worker frees them; mimalloc handles frees from another thread far more
/// cheaply than glibc's malloc. BENCHMARKS.md has the measurements.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
