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
    let scheme = if server.tls().is_some() { "https" } else { "http" };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {scheme}://{local}");
    if let Some(tls) = server.tls() {
        let made = if tls.generated { "made" } else { "using" };
        let _ = writeln!(out, "tls:       {made} certificate {}", tls.cert_path.display());
        let _ = writeln!(out, "           SHA-256 {}", tls.fingerprint);
    }
    if let Some(redirect) = server.redirect_addr() {
        let _ = writeln!(out, "redirect:  http://{redirect} -> https://{public}");
    }
    let _ = writeln!(out, "broadcast: open {scheme}://{public}/capture");
    let _ = writeln!(out, "watch:     open {scheme}://{public}/cast/NAME (or the list at {scheme}://{public}/)");
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
