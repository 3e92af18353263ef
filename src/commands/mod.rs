//! One module per subcommand; each exposes `run(args) -> anyhow::Result<()>`.

pub mod bench_decode;
pub mod compress;
pub mod demo;
pub mod doctor;
pub mod dryrun;
pub mod eval;
pub mod frontier;
pub mod init;
pub mod kd;
pub mod log;
pub mod prepare;
pub mod python;
pub mod report;
pub mod results;
pub mod run;
pub mod status;
pub mod trial;

use crate::cli::Command;

/// Runs one subcommand.
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Doctor(a) => doctor::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Trial(a) => trial::run(a),
        Command::Compress(a) => compress::run(a),
        Command::Frontier(a) => frontier::run(a),
        Command::Kd(c) => kd::run(c),
        Command::Dryrun(a) => dryrun::run(a),
        Command::BenchDecode(a) => bench_decode::run(a),
        Command::Run(a) => run::run(a),
        Command::Results(a) => results::run(a),
        Command::Log(a) => log::run(a),
        Command::Report(a) => report::run(a),
        Command::Status(a) => status::run(a),
        Command::Init(a) => init::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Python(a) => python::run(a),
        Command::Demo(a) => demo::run(a),
    }
}
