//! Connecting and upgrading: a window of handshakes in flight, bounded retries.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Token};

use super::Run;
use crate::conn::{Phase, Role};
use crate::receive::{Input, ingest};
use crate::transport::{recv, send};
use crate::{sys, tls};

/// The RFC 6455 §1.3 example key and its accept value: no hashing needed per connection.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Handshakes in flight at once, so thousands of connects don't overflow the listen backlog.
const CONNECT_WINDOW: usize = 256;
const CONNECT_ATTEMPTS: u32 = 5;
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

fn is_fd_exhausted(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

impl Run {
    /// Connects and upgrades `tokens`, at most `CONNECT_WINDOW` at a time, with bounded retries.
    pub fn connect_group(&mut self, tokens: std::ops::Range<usize>, events: &mut Events) -> Result<(), String> {
        self.queue.extend(tokens.clone());
        let deadline = Instant::now() + CONNECT_DEADLINE;
        loop {
            while self.in_flight < CONNECT_WINDOW
                && let Some(token) = self.queue.pop_front()
            {
                self.in_flight += 1;
                self.start_connect(token, Instant::now());
            }
            if let Some(fatal) = self.fatal.take() {
                return Err(fatal);
            }
            if self.queue.is_empty() && self.in_flight == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                for token in tokens {
                    let phase = self.conns[token].phase;
                    if !matches!(phase, Phase::Open | Phase::Done) {
                        self.give_up(token, "connect deadline passed".into());
                    }
                }
                self.queue.clear();
                self.retries.clear();
                self.in_flight = 0;
                return Ok(());
            }
            self.tick(events, Some(deadline))?;
        }
    }

    pub fn start_connect(&mut self, token: usize, now: Instant) {
        self.conns[token].attempts += 1;
        let mut sock = match TcpStream::connect(self.args.addr) {
            Ok(sock) => sock,
            Err(e) if is_fd_exhausted(&e) => {
                let open = self.conns.iter().filter(|c| c.sock.is_some()).count();
                self.fatal = Some(format!(
                    "out of file descriptors with {open} connections open ({e}): raise the limit with \
                     `ulimit -n {}` before running relay-load",
                    self.conns.len() + 32
                ));
                return;
            }
            Err(e) => return self.retry_or_fail(token, format!("connect: {e}"), now),
        };
        if let Err(e) = self.poll.registry().register(&mut sock, Token(token), Interest::READABLE | Interest::WRITABLE)
        {
            return self.retry_or_fail(token, format!("register: {e}"), now);
        }
        let session = match &self.args.tls {
            None => None,
            Some(target) => match tls::connect(&target.config, &target.name) {
                Ok(session) => Some(session),
                Err(e) => {
                    let _ = self.poll.registry().deregister(&mut sock);
                    return self.give_up(token, format!("tls: {e}"));
                }
            },
        };
        let c = &mut self.conns[token];
        c.tls = session;
        c.sock = Some(sock);
        c.phase = Phase::Connecting;
        c.readable = false;
        c.writable = false;
        c.req_sent = 0;
        c.resp.clear();
    }

    /// A connect or handshake attempt failed in a way that may pass (refused, reset, no port).
    fn retry_or_fail(&mut self, token: usize, why: String, now: Instant) {
        self.drop_socket(token);
        let attempts = self.conns[token].attempts;
        if attempts < CONNECT_ATTEMPTS {
            self.conns[token].phase = Phase::Queued;
            self.retries.push((now + Duration::from_millis(50 << attempts), token));
        } else {
            self.give_up(token, why);
        }
    }

    fn give_up(&mut self, token: usize, why: String) {
        self.drop_socket(token);
        self.conns[token].phase = Phase::Done;
        self.connect_failures += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.problem(why);
    }

    pub(super) fn on_connecting(&mut self, token: usize, now: Instant) {
        let c = &mut self.conns[token];
        let Some(sock) = c.sock.as_mut() else { return };
        match sock.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.retry_or_fail(token, format!("connect: {e}"), now),
        }
        match sock.peer_addr() {
            Ok(_) => {}
            // A spurious wake-up: still connecting.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.retry_or_fail(token, format!("connect: {e}"), now),
        }
        // Small paced messages must leave at once, not wait for an ACK (Nagle).
        let _ = sock.set_nodelay(true);
        if c.role == Role::Watcher {
            // Latency is taken at the kernel's receive time, not when this one thread gets round
            // to reading the socket (it reads a thousand watchers one after another).
            sys::enable_rx_timestamps(sock);
        }
        c.phase = Phase::Handshake;
        self.on_handshake(token, now);
    }

    fn request(&self, token: usize) -> String {
        let c = &self.conns[token];
        let role = if c.role == Role::Watcher { "watch" } else { "publish" };
        format!(
            "GET {}/ws/{role}/load{} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.args.prefix, c.stream, self.args.authority
        )
    }

    pub(super) fn on_handshake(&mut self, token: usize, now: Instant) {
        let request = self.request(token);
        let (now_us, join_seq) = (self.clock.now_us(), self.pubs.first().map_or(0, |p| p.next_seq));
        let c = &mut self.conns[token];
        let Some(sock) = c.sock.as_mut() else { return };
        while c.req_sent < request.len() {
            match send(sock, &mut c.tls, &request.as_bytes()[c.req_sent..]) {
                Ok(n) => c.req_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.retry_or_fail(token, format!("handshake: {e}"), now),
            }
        }
        if let Some(tls) = c.tls.as_mut() {
            match tls::flush(sock, tls) {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(e) => return self.retry_or_fail(token, format!("handshake: {e}"), now),
            }
        }
        let head_end = loop {
            match recv(sock, &mut c.tls, &mut self.buf) {
                Ok(0) => return self.retry_or_fail(token, "closed during the handshake".into(), now),
                Ok(n) => c.resp.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.retry_or_fail(token, format!("handshake: {e}"), now),
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&c.resp) {
                Ok(httparse::Status::Complete(n)) => {
                    let accept = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                        .map(|h| h.value.trim_ascii());
                    match response.code {
                        Some(101) if accept == Some(WS_ACCEPT.as_bytes()) => break n,
                        Some(101) => return self.give_up(token, "101 with a wrong Sec-WebSocket-Accept".into()),
                        code => {
                            return self.give_up(token, format!("refused: HTTP {}", code.unwrap_or(0)));
                        }
                    }
                }
                Ok(httparse::Status::Partial) if c.resp.len() > MAX_RESPONSE_HEAD => {
                    return self.give_up(token, "response head too large".into());
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return self.give_up(token, format!("bad response: {e}")),
            }
        };
        c.phase = Phase::Open;
        c.opened = true;
        c.writable = true;
        c.acct.opened_us = now_us;
        c.acct.join_seq = join_seq;
        self.in_flight = self.in_flight.saturating_sub(1);
        // Frames that came with the response (our server's first JSON event, for one).
        let rest = std::mem::take(&mut c.resp).split_off(head_end);
        let at = self.clock.arrival(None);
        if let Err(e) = ingest(c, Input::Bytes(&rest), at, &mut self.meter) {
            return self.lost(token, format!("protocol error: {e}"));
        }
        self.on_open(token, now);
    }
}
