//! Test support: the real server binary on port 0 with a fixture `public_dir`, and small
//! raw-socket HTTP and WebSocket clients that show exactly what is on the wire.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Everything the server printed on stdout after the banner line.
    pub banner: Vec<String>,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("camrelay-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `public` directory with known pages, a nested file, and traps outside it.
fn write_fixture(dir: &Path) -> PathBuf {
    let public = dir.join("public");
    std::fs::create_dir_all(public.join("js")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(public.join("capture.html"), "<h1>capture</h1>").unwrap();
    std::fs::write(public.join("cast.html"), "<h1>cast</h1>").unwrap();
    std::fs::write(public.join("js/app.js"), "console.log(1);").unwrap();
    std::fs::write(public.join("style.css"), "body{}").unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), public.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir, public.join("up")).unwrap();
    public
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_camrelay")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// Starts the server with `port = 0`, the fixture pages, and extra config lines.
    pub fn start_with(extra_config: &str) -> Server {
        let dir = temp_dir("server");
        let public = write_fixture(&dir);
        let config = dir.join("server.config");
        std::fs::write(
            &config,
            format!("port = 0\npublic_dir = {}\nloglevel = info\n{extra_config}\n", public.display()),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the server binary");
        let lines = spawn_line_reader(child.stdout.take().unwrap());
        let first = lines.recv_timeout(DEADLINE).expect("the server prints its banner");
        let addr = first
            .strip_prefix("listening on http://")
            .or_else(|| first.strip_prefix("listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        // The banner ends with the line that tells where to watch.
        let mut banner: Vec<String> = Vec::new();
        while !banner.last().is_some_and(|l| l.contains("/cast/")) {
            banner.push(lines.recv_timeout(DEADLINE).expect("the rest of the banner"));
        }
        Server { child, addr, dir, banner }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`, ...) and waits for the exit status.
    pub fn signal(&mut self, name: &str) -> std::process::ExitStatus {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        wait_for_exit(&mut self.child)
    }

    /// The process is still running and never panicked.
    pub fn assert_healthy(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "server exited; log:\n{}", self.log());
        assert!(!self.log().contains("panicked"), "server panicked; log:\n{}", self.log());
        let r = get(self.addr, "/healthz");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    }

    /// Reads one metric sample, e.g. `relay_connections{kind="watcher"}`.
    pub fn metric(&self, sample: &str) -> u64 {
        let body = String::from_utf8(get(self.addr, "/metrics").body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Waits until a metric reaches `want`, or fails at the deadline.
    pub fn wait_metric(&self, sample: &str, want: u64) {
        wait_until(&format!("{sample} == {want}"), || self.metric(sample) == want);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory (`VmRSS` in `/proc/PID/status`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .unwrap_or_else(|| panic!("no VmRSS in\n{status}"));
        kib.trim().parse::<u64>().unwrap() * 1024
    }

    /// After an abuse case: the same process is alive, never panicked, serves `/healthz`, and
    /// `stream` (opened before the abuse) still relays.
    pub fn assert_still_serves(&mut self, stream: &mut LiveStream) {
        self.assert_healthy();
        stream.assert_flows();
    }
}

/// A live stream with one watcher, opened before an abuse case to check that it is untouched.
pub struct LiveStream {
    pub publisher: Ws,
    pub watcher: Ws,
    pub seq: u64,
}

impl LiveStream {
    pub fn open(server: &Server, name: &str) -> LiveStream {
        let mut watcher = Ws::connect(server.addr, &format!("/ws/watch/{name}"));
        assert_eq!(watcher.recv_json(), serde_json::json!({"event": "publisher", "live": false}));
        let mut publisher = Ws::connect(server.addr, &format!("/ws/publish/{name}"));
        assert_eq!(publisher.recv_json(), serde_json::json!({"event": "stream", "name": name}));
        assert_eq!(watcher.recv_json(), serde_json::json!({"event": "publisher", "live": true}));
        LiveStream { publisher, watcher, seq: 0 }
    }

    /// One message through the relay, byte-identical; returns it. Small enough for any
    /// `max_message_bytes` the tests use.
    pub fn assert_flows(&mut self) -> Vec<u8> {
        self.seq += 1;
        let m = media(4, self.seq, 200);
        self.publisher.send_binary(&m);
        assert_eq!(self.watcher.recv_binary(), m, "the live stream relays message {}", self.seq);
        m
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            assert!(!self.log().contains("panicked"), "server panicked; log:\n{}", self.log());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds; fails after `DEADLINE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn spawn_line_reader(out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// Reads one response from a keep-alive connection (`head_only` for answers to HEAD).
pub fn read_response(s: &mut impl Read, head_only: bool) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response head");
        assert!(n == 1, "connection closed inside a response head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut r = Response { status, headers, body: Vec::new() };
    let length: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
    if !head_only && status != 304 && status != 101 {
        r.body = vec![0; length];
        s.read_exact(&mut r.body).expect("read response body");
    }
    r
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, raw.starts_with("HEAD "))
}

/// Like `get`, but `None` when the server drops the connection instead of answering.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let mut cursor = std::io::Cursor::new(all);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_response(&mut cursor, false))).ok()
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

/// Asserts the peer closes the connection (EOF or reset) before the deadline; returns
/// whatever it sent until then.
pub fn assert_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("connection not closed in time")
            }
            Err(_) => return rest,
        }
    }
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A raw WebSocket client.
pub struct Ws {
    pub stream: TcpStream,
}

impl Ws {
    /// Opens `path` and checks the 101 answer byte for byte.
    pub fn connect(addr: SocketAddr, path: &str) -> Ws {
        Ws::try_connect(addr, path, "").unwrap_or_else(|r| panic!("upgrade refused: {r:?}"))
    }

    pub fn try_connect(addr: SocketAddr, path: &str, extra: &str) -> Result<Ws, Response> {
        let mut stream = connect(addr);
        stream.write_all(upgrade_request(path, extra).as_bytes()).unwrap();
        let r = read_response(&mut stream, false);
        if r.status != 101 {
            return Err(r);
        }
        assert_eq!(r.header("sec-websocket-accept"), Some(ACCEPT));
        assert_eq!(r.header("upgrade").map(str::to_lowercase).as_deref(), Some("websocket"));
        assert!(r.header("sec-websocket-extensions").is_none());
        Ok(Ws { stream })
    }

    /// A masked frame as a client must send it.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw(&Ws::frame(true, opcode, payload));
    }

    pub fn send_binary(&mut self, payload: &[u8]) {
        self.send(2, payload);
    }

    /// The next frame from the server (fails at the deadline).
    pub fn recv(&mut self) -> Frame {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h).expect("read frame header");
        assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
        assert_eq!(h[0] & 0x70, 0, "no reserved bits");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).expect("read frame payload");
        Frame { fin: h[0] & 0x80 != 0, opcode: h[0] & 0x0f, payload }
    }

    /// The next data message, skipping pings.
    pub fn recv_message(&mut self) -> Frame {
        loop {
            let f = self.recv();
            if f.opcode != 9 {
                return f;
            }
        }
    }

    pub fn recv_json(&mut self) -> serde_json::Value {
        let f = self.recv_message();
        assert_eq!(f.opcode, 1, "expected a text event, got {f:?}");
        serde_json::from_slice(&f.payload).unwrap()
    }

    pub fn recv_binary(&mut self) -> Vec<u8> {
        let f = self.recv_message();
        assert_eq!(
            f.opcode,
            2,
            "expected a binary message, got opcode {} {:?}",
            f.opcode,
            String::from_utf8_lossy(&f.payload)
        );
        f.payload
    }

    /// Reads up to the close frame and returns its code; then the server closes TCP.
    pub fn recv_close(&mut self) -> u16 {
        loop {
            let f = self.recv();
            if f.opcode == 8 {
                assert!(f.payload.len() >= 2, "close without a code");
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }

    pub fn close(&mut self, code: u16) {
        self.send(8, &code.to_be_bytes());
    }
}

/// A media message: kind byte, 8-byte timestamp, payload.
pub fn media(kind: u8, seq: u64, len: usize) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend((0..len).map(|i| (i as u64 * 31 + seq) as u8));
    m
}
