//! `autoqat`: the command-line edge. Parses arguments, sets up logging, dispatches to one
//! module per subcommand, and prints any error once with its cause chain.

mod cli;
mod commands;
mod demo;
mod exit;
mod fmt;
mod host_alloc;
mod prepare;
mod report;
mod status;
mod workspace;

use clap::Parser;

fn main() {
    // Like ripgrep: die quietly on a closed pipe (`autoqat trial --schema | head`) instead of
    // panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A file-size limit (`ulimit -f`, a quota) then fails the write with an error we report and
    // clean up after, instead of killing the process mid-file.
    // SAFETY: as above, before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // Before any thread starts: libtorch's worker threads allocate through the same policy.
    let tuned = host_alloc::keep_large_buffers();
    let cli = cli::Cli::parse();
    cli::init_logging(cli.verbose);
    tracing::debug!(tuned, "host allocator keeps large buffers for reuse");
    if let Err(err) = commands::dispatch(cli.command) {
        // One line a user can act on: the top error, then its causes joined.
        let mut msg = format!("error: {err}");
        for cause in err.chain().skip(1) {
            msg.push_str(&format!(": {cause}"));
        }
        eprintln!("{msg}");
        std::process::exit(exit::classify(&err) as i32);
    }
}
