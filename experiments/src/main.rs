//! The `meshsim` binary: see `meshsim --help`.

fn main() -> std::process::ExitCode {
    meshsim_experiments::cli::main()
}
