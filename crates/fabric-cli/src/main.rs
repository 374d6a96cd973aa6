//! The `fabric` binary: parse the command line, run the command, map the result to an exit code.

fn main() -> std::process::ExitCode {
    fabric_cli::main()
}
