//! The `camrelay` binary: reads the config, binds, prints where to go, runs the reactor.

use std::io::Write;
use std::process::ExitCode;

use camrelay::config::{self, Command};
use camrelay::reactor::{Server, StartError};

fn main() -> ExitCode {
    let config = match config::from_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("camrelay {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("camrelay: {message}\n(run with --help for usage)");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr; stdout carries only the banner.
    if let Err(e) = simple_logger::SimpleLogger::new().with_level(config.loglevel).init() {
        eprintln!("camrelay: cannot start logging: {e}");
    }
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(StartError::Bind(addr, e)) => {
            eprintln!("camrelay: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
        Err(StartError::Setup(message)) => {
            eprintln!("camrelay: {message}");
            return ExitCode::from(2);
        }
    };
    let local = match server.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("camrelay: {e}");
            return ExitCode::from(1);
        }
    };
    let public = server.public_address().to_owned();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{local}");
    let _ = writeln!(out, "broadcast: open http://{public}/capture");
    let _ = writeln!(out, "watch:     open http://{public}/cast/NAME (or the list at http://{public}/)");
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camrelay: {e}");
            ExitCode::from(1)
        }
    }
}
