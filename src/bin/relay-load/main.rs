//! `relay-load`: the benchmarks' load generator (issue 4). One thread runs one mio loop with N
//! watchers on K streams and one publisher per stream, paced or as fast as TCP allows. Every
//! message carries its send time and a per-stream sequence number in its first 17 bytes, so a
//! watcher measures loss and latency from those bytes alone: the rest of each payload is
//! skipped, nothing is allocated per message, latencies go into a fixed log-linear histogram.

use std::process::ExitCode;

use args::{Cli, HELP, parse_args};
use probe::fd_soft_limit;
use run::Run;

mod args;
mod clock;
mod conn;
mod frames;
mod histogram;
mod meter;
mod payload;
mod probe;
mod publisher;
mod receive;
mod report;
mod run;
mod soak;
mod sys;
mod tls;
mod transport;

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Cli::Run(args)) => *args,
        Ok(Cli::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("relay-load: {message}\n(run with --help for usage)");
            return ExitCode::from(2);
        }
    };
    let need = (args.watchers + args.streams + 32) as u64;
    if let Some(limit) = fd_soft_limit()
        && limit < need
    {
        eprintln!(
            "relay-load: {} connections need {need} file descriptors but the limit is {limit}: \
             run `ulimit -n {need}` (or more) in this shell first",
            args.watchers + args.streams
        );
        return ExitCode::from(1);
    }
    let json_only = args.json_only;
    if args.soak.is_some() {
        return match soak::run(args) {
            Ok(report) => {
                println!("{}", report.json());
                if !json_only {
                    eprint!("{}", report.table());
                }
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("relay-load: {message}");
                ExitCode::from(1)
            }
        };
    }
    let report = match Run::new(args).and_then(Run::execute) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("relay-load: {message}");
            return ExitCode::from(1);
        }
    };
    println!("{}", report.json());
    if !json_only {
        eprint!("{}", report.table());
    }
    ExitCode::SUCCESS
}
