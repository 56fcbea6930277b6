//! The real binary: flags, config errors and their exit codes, the banner, shutdown.

mod common;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

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

/// A server started by hand with its own flags; killed if the test fails before it stops it.
struct Started {
    child: std::process::Child,
    banner: Vec<String>,
}

impl Started {
    /// Runs the binary in `cwd` and reads its banner (up to the `watch:` line).
    fn run(args: &[&str], cwd: &Path, log: &Path) -> Started {
        let mut child = Command::new(binary())
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let lines = spawn_line_reader(child.stdout.take().unwrap());
        let mut banner: Vec<String> = Vec::new();
        while !banner.last().is_some_and(|l| l.contains("/cast/")) {
            let line = lines.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("banner {banner:?} incomplete; log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
            });
            banner.push(line);
        }
        Started { child, banner }
    }

    fn line(&self, prefix: &str) -> &str {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", self.banner))
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        wait_for_exit(&mut self.child)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTPS to `addr`, verifying the server as `name` against `pem` alone.
fn https_get(pem: &Path, addr: SocketAddr, name: &str, path: &str) -> Response {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = rustls::StreamOwned::new(session, connect(addr));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    read_response(&mut s, false)
}

/// The SHA-256 of the PEM file's first certificate, as the banner prints it.
fn fingerprint_of(pem: &Path) -> String {
    let der = CertificateDer::pem_file_iter(pem).unwrap().next().expect("a certificate").unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[test]
fn self_signed_makes_a_certificate_beside_the_config_keeps_it_and_serves_https() {
    let dir = temp_dir("self-signed");
    let conf_dir = dir.join("conf");
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(conf_dir.join("www")).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(conf_dir.join("www/capture.html"), "<h1>capture</h1>").unwrap();
    let config = conf_dir.join("server.config");
    std::fs::write(&config, "public_dir = www\nloglevel = warn\n").unwrap();
    let cert = conf_dir.join("camrelay-self-signed.pem");
    let key = conf_dir.join("camrelay-self-signed-key.pem");
    let args = ["--config", config.to_str().unwrap(), "--self-signed", "--port", "0"];

    let first = Started::run(&args, &cwd, &dir.join("first.log"));
    // --self-signed without --address is for the LAN: every interface.
    let bound: SocketAddr = first.line("listening on https://").parse().unwrap();
    assert!(bound.ip().is_unspecified() && bound.port() != 0, "{:?}", first.banner);
    assert_eq!(first.line("tls:       made certificate "), cert.display().to_string());
    let fingerprint = first.line("           SHA-256 ").to_owned();
    let capture = first.line("broadcast: open https://").strip_suffix("/capture").expect("a capture URL").to_owned();
    let watch = first.line("watch:     open https://");
    assert_eq!(watch, format!("{capture}/cast/NAME (or the list at https://{capture}/)"));
    let (host, port) = capture.rsplit_once(':').unwrap();
    assert_eq!(port, bound.port().to_string(), "the links carry the bound port");
    let host = host.trim_start_matches('[').trim_end_matches(']');

    // The certificate and key are beside the config, not in the working directory.
    assert!(cert.is_file() && key.is_file(), "{:?}", std::fs::read_dir(&conf_dir).unwrap().collect::<Vec<_>>());
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing is written to the working directory");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    assert_eq!(fingerprint, fingerprint_of(&cert), "the banner shows the SHA-256 of the certificate file");
    let pem = std::fs::read(&cert).unwrap();

    // A client that trusts exactly that certificate: over loopback, and at the address the
    // banner tells a phone to open (the certificate names this machine's addresses).
    let loopback = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    let r = https_get(&cert, loopback, "127.0.0.1", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = https_get(&cert, loopback, "localhost", "/capture");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>capture</h1>"));
    let public = (host, bound.port()).to_socket_addrs().unwrap().next().unwrap();
    let r = https_get(&cert, public, host, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "via {capture}");
    assert_eq!(first.terminate().code(), Some(0));

    // A restart uses the same certificate, so the browser's exception still holds.
    let second = Started::run(&args, &cwd, &dir.join("second.log"));
    assert_eq!(second.line("tls:       using certificate "), cert.display().to_string());
    assert_eq!(second.line("           SHA-256 "), fingerprint);
    assert_eq!(std::fs::read(&cert).unwrap(), pem, "the certificate file is unchanged");
    let port: u16 = second.line("listening on https://").parse::<SocketAddr>().unwrap().port();
    let r = https_get(&cert, SocketAddr::from(([127, 0, 0, 1], port)), "localhost", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(second.terminate().code(), Some(0));
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
