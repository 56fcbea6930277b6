//! The real binary: flags, config errors and their exit codes, the banner, shutdown.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_file(text: &str) -> String {
    let path = temp_dir("cli").join("server.config");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--config PATH") && out.contains("--public-dir"));
    let (code, out, _) = run(&["--version"]);
    assert_eq!((code, out.trim()), (0, format!("camrelay {}", env!("CARGO_PKG_VERSION")).as_str()));
}

#[test]
fn bad_flags_and_config_exit_2_naming_the_problem() {
    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
    let (code, _, err) = run(&["--port", "eighty"]);
    assert_eq!(code, 2);
    assert!(err.contains("--port"), "{err}");
    let (code, _, err) = run(&["--config", &config_file("port = 0\ncolour = blue\n")]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2") && err.contains("colour"), "{err}");
    let (code, _, err) = run(&["--config", &config_file("# ok\nmax_connections = lots\n")]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2") && err.contains("max_connections"), "{err}");
    let (code, _, err) = run(&["--config", "/nonexistent/server.config"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/server.config"), "{err}");
    let (code, _, err) = run(&["--port", "0", "--public-dir", "/nonexistent/public"]);
    assert_eq!(code, 2);
    assert!(err.contains("public_dir"), "{err}");
}

#[test]
fn port_in_use_exits_1() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (code, out, err) = run(&["--port", &port, "--public-dir", "."]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen") && err.contains(&port), "{err}");
    assert!(!out.contains("listening"));
}

#[test]
fn banner_shows_the_bound_address_and_page_links() {
    let server = Server::start_with("public_address = cam.example:9999");
    assert_ne!(server.addr.port(), 0);
    let banner = server.banner.join("\n");
    assert!(banner.contains("http://cam.example:9999/capture"), "{banner}");
    assert_eq!(get(server.addr, "/api/info").json()["public_address"], "cam.example:9999");
}

#[test]
fn command_line_overrides_the_file() {
    let dir = temp_dir("override");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "override").unwrap();
    let config = config_file("port = 1\npublic_dir = /nonexistent\n");
    let mut child = Command::new(binary())
        .args(["--config", &config, "--port", "0", "--address", "127.0.0.1", "--loglevel", "warn", "--public-dir"])
        .arg(dir.join("www"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = spawn_line_reader(child.stdout.take().unwrap());
    let first = lines.recv_timeout(DEADLINE).unwrap();
    let addr = first.strip_prefix("listening on http://").unwrap().parse().unwrap();
    assert_eq!(get(addr, "/").text(), "override");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_closes_websockets_with_1001_and_exits_0() {
    shutdown_closes_websockets_with_1001_and_exits_0("TERM");
}

#[test]
fn sigint_closes_websockets_with_1001_and_exits_0() {
    shutdown_closes_websockets_with_1001_and_exits_0("INT");
}

fn shutdown_closes_websockets_with_1001_and_exits_0(signal: &str) {
    let mut server = Server::start_with("echo_endpoint = true");
    let mut p = Ws::connect(server.addr, "/ws/publish/bye");
    let mut w = Ws::connect(server.addr, "/ws/watch/bye");
    let mut e = Ws::connect(server.addr, "/ws/echo");
    assert_eq!(w.recv_json()["live"], true);
    let status = std::thread::scope(|s| {
        let closes = [&mut p, &mut w, &mut e].map(|ws| {
            s.spawn(move || {
                let code = ws.recv_close();
                ws.close(code);
                code
            })
        });
        let status = server.signal(signal);
        for c in closes {
            assert_eq!(c.join().unwrap(), 1001);
        }
        status
    });
    assert_eq!(status.code(), Some(0));
}
