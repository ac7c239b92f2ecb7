/// The reader thread allocates every record and request, and the runtime's
/// worker frees them. mimalloc frees memory from another thread far more
/// cheaply than glibc's malloc, as BENCHMARKS.md measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
