//! The single-threaded mio reactor: accepts connections, reads and writes them, runs timers.
//!
//! Readiness is edge-triggered and every socket is registered once for both directions, so
//! there is no re-registration: reads and writes drain until `WouldBlock`. Output queued on
//! a connection by another one's input (publisher → watchers) gets no writable edge of its
//! own, so every connection with new output goes on `to_flush` and is flushed at the end of
//! the tick (the writable invariant).

mod connection;
mod out_queue;
mod requests;
mod transport;
mod websocket;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::chunk::Chunk;
use crate::config::Config;
use crate::hub::policy::{Backlog, Policy};
use crate::hub::{Clients, Hub};
use crate::metrics::{Gauges, Metrics};
use crate::tls::Tls;
use crate::ws::frame;
use connection::{Connection, Phase, Role};
use transport::Transport;

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const REDIRECT_LISTENER: Token = Token(usize::MAX - 2);

/// One read syscall's worth; input is parsed straight out of it.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per tick, so one fast publisher cannot starve the rest.
const READS_PER_TICK: usize = 8;
/// How often timers are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long a closing connection may take to flush and say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A watcher over its bound this long is closed.
const SLOW_CLOSE_AFTER: Duration = Duration::from_secs(10);

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    /// `http_port` beside HTTPS: redirects pages to HTTPS.
    redirect_listener: Option<TcpListener>,
    tls: Option<Tls>,
    signals: Signals,
    conns: Slab<Connection>,
    hub: Hub,
    config: Config,
    /// `public_dir`, canonical, so confinement checks compare real paths.
    root: PathBuf,
    /// `host:port` for links.
    public_address: String,
    metrics: Metrics,
    scratch: Vec<u8>,
    to_flush: Vec<usize>,
    to_read: Vec<usize>,
    /// The emptied list of the last pass, swapped in so the lists keep their capacity.
    spare: Vec<usize>,
    next_sweep: Instant,
    shutdown_deadline: Option<Instant>,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The port could not be bound (exit code 1).
    Bind(SocketAddr, io::Error),
    /// Anything else about the setup (exit code 2).
    Setup(String),
}

impl Server {
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let addr = SocketAddr::new(config.address, config.port);
        let root = config
            .public_dir
            .canonicalize()
            .map_err(|e| StartError::Setup(format!("public_dir {}: {e}", config.public_dir.display())))?;
        let mut listener = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
        let local = listener.local_addr().map_err(|e| StartError::Bind(addr, e))?;
        let poll = Poll::new().map_err(|e| StartError::Setup(e.to_string()))?;
        let mut signals = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .map_err(|e| StartError::Setup(format!("signals: {e}")))?;
        let setup = |e: io::Error| StartError::Setup(e.to_string());
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(setup)?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).map_err(setup)?;
        let public_address = config.public_address.clone().unwrap_or_else(|| default_public_address(local));
        let public_host = host_of(&public_address);
        let tls = crate::tls::load(&config, public_host).map_err(StartError::Setup)?;
        let redirect_listener = match (config.http_port, &tls) {
            (Some(port), Some(_)) => {
                let addr = SocketAddr::new(config.address, port);
                let mut listener = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
                poll.registry().register(&mut listener, REDIRECT_LISTENER, Interest::READABLE).map_err(setup)?;
                Some(listener)
            }
            _ => None,
        };
        let policy = Policy {
            queue_bytes: config.watcher_queue_bytes,
            max_lag: Duration::from_millis(config.watcher_max_lag_ms),
            slow_close_after: SLOW_CLOSE_AFTER,
        };
        Ok(Server {
            poll,
            listener,
            redirect_listener,
            tls,
            signals,
            conns: Slab::new(),
            hub: Hub::new(policy),
            config,
            root,
            public_address,
            metrics: Metrics::default(),
            scratch: vec![0; READ_CHUNK],
            to_flush: Vec::new(),
            to_read: Vec::new(),
            spare: Vec::new(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            shutdown_deadline: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn public_address(&self) -> &str {
        &self.public_address
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The plain-HTTP redirect port's address, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until SIGINT or SIGTERM, then closes every WebSocket with 1001 and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout =
                if self.to_read.is_empty() { self.next_sweep.saturating_duration_since(now) } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now, false),
                    REDIRECT_LISTENER => self.accept(now, true),
                    SIGNALS => self.on_signal(now),
                    Token(token) => {
                        if event.is_writable() {
                            if let Some(conn) = self.conns.get_mut(token) {
                                conn.write_blocked = false;
                            }
                            self.flush(token, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(token, now);
                        }
                    }
                }
            }
            let mut reading = std::mem::replace(&mut self.to_read, std::mem::take(&mut self.spare));
            for token in reading.drain(..) {
                self.read(token, now);
            }
            self.spare = reading;
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_EVERY;
            }
            self.flush_scheduled(now);
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || now >= deadline)
            {
                log::info!("shut down ({} connections still open)", self.conns.len());
                return Ok(());
            }
        }
    }

    /// Accepts every pending connection of one listener (`redirect`: the plain `http_port`).
    fn accept(&mut self, now: Instant, redirect: bool) {
        loop {
            let listener = match (redirect, &self.redirect_listener) {
                (true, Some(l)) => l,
                (true, None) => return,
                (false, _) => &self.listener,
            };
            let (mut socket, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: the sweep tries again.
                    log::error!("accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.config.max_connections || self.shutdown_deadline.is_some() {
                self.metrics.connections_rejected += 1;
                log::warn!("{peer}: refused, {} connections open (max_connections)", self.conns.len());
                // A TLS client would not understand a plain answer; it just sees the close.
                if self.tls.is_none() || redirect {
                    let _ = socket
                        .write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    *self.metrics.http_responses.entry(503).or_default() += 1;
                }
                continue;
            }
            let _ = socket.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let token = entry.key();
            if let Err(e) =
                self.poll.registry().register(&mut socket, Token(token), Interest::READABLE | Interest::WRITABLE)
            {
                log::error!("{peer}: cannot register: {e}");
                continue;
            }
            let transport = match &self.tls {
                Some(tls) if !redirect => match rustls::ServerConnection::new(tls.config.clone()) {
                    Ok(session) => Transport::tls(socket, session),
                    Err(e) => {
                        log::error!("{peer}: cannot start TLS: {e}");
                        let _ = self.poll.registry().deregister(&mut socket);
                        continue;
                    }
                },
                _ => Transport::Plain(socket),
            };
            let deadline = now + Duration::from_millis(self.config.request_timeout_ms);
            let mut conn = Connection::new(transport, peer, now, deadline);
            conn.redirect_only = redirect;
            entry.insert(conn);
            self.metrics.connections_accepted += 1;
            log::debug!("{peer}: connected");
        }
    }

    fn on_signal(&mut self, now: Instant) {
        if self.signals.pending().next().is_none() || self.shutdown_deadline.is_some() {
            return;
        }
        log::info!("shutting down: closing {} connections", self.conns.len());
        self.shutdown_deadline = Some(now + CLOSE_GRACE);
        let _ = self.poll.registry().deregister(&mut self.listener);
        if let Some(listener) = &mut self.redirect_listener {
            let _ = self.poll.registry().deregister(listener);
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            if self.conns[token].is_websocket() {
                // A watcher's backlog would hold the 1001 back past the grace period.
                self.conns[token].out.discard_unsent();
                self.start_close(token, 1001, "server shutting down", now);
            } else {
                self.enter_closing(token, now);
            }
        }
    }

    /// Reads until `WouldBlock`, the per-tick budget, or backpressure.
    fn read(&mut self, token: usize, now: Instant) {
        // Pipelined requests held back by backpressure come first: no new edge announces them.
        if let Some(Connection { phase: Phase::Http { input, .. }, read_paused: false, .. }) = self.conns.get(token)
            && !input.is_empty()
        {
            self.process_http(token, now);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut drained = false;
        for _ in 0..READS_PER_TICK {
            let Some(conn) = self.conns.get_mut(token) else { break };
            if conn.read_paused || conn.peer_closed {
                break;
            }
            match conn.socket.read(&mut scratch) {
                Ok(0) => {
                    conn.peer_closed = true;
                    self.on_peer_closed(token, now);
                    drained = true;
                    break;
                }
                Ok(n) => {
                    conn.last_input = now;
                    conn.ping_sent = false;
                    self.metrics.bytes_read += n as u64;
                    self.on_input(token, &scratch[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(token, &format!("read error: {e}"));
                    break;
                }
            }
        }
        self.scratch = scratch;
        let Some(conn) = self.conns.get(token) else { return };
        // Budget used up: more may be waiting, and no new edge will say so.
        if !drained && !conn.read_paused && !conn.peer_closed {
            self.to_read.push(token);
        }
        // A TLS handshake answers while reading; what the socket did not take waits for a flush.
        if conn.socket.wants_write() {
            self.schedule_flush(token);
        }
    }

    fn on_input(&mut self, token: usize, bytes: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        match &mut conn.phase {
            Phase::Http { input, .. } => {
                // The first bytes of a new request head start its clock (not every byte: a
                // client trickling a head is cut off at request_timeout_ms all the same).
                if input.is_empty() {
                    conn.deadline = Some(now + Duration::from_millis(self.config.request_timeout_ms));
                }
                input.extend_from_slice(bytes);
                self.process_http(token, now);
            }
            Phase::WebSocket { .. } => self.process_websocket(token, bytes, now),
            Phase::Closing => {}
        }
    }

    fn on_peer_closed(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        match &conn.phase {
            // After a close handshake, or with a request answered: a clean end once flushed.
            Phase::Closing if conn.write_shut => self.close(token, "closed"),
            Phase::Closing => {}
            Phase::Http { .. } if !conn.has_output() => self.close(token, "closed by peer"),
            // Half-closed with output pending: finish sending, then close.
            Phase::Http { .. } => self.enter_closing(token, now),
            Phase::WebSocket { .. } => {
                conn.close_code.get_or_insert(1006);
                self.close(token, "connection dropped without a close frame");
            }
        }
    }

    fn flush(&mut self, token: usize, now: Instant) {
        let limit = self.own_output_limit();
        let Some(conn) = self.conns.get_mut(token) else { return };
        conn.flush_scheduled = false;
        let before = conn.out.bytes();
        match conn.flush() {
            Ok(written) => {
                self.metrics.bytes_written += written as u64;
                if written > 0 {
                    conn.last_write = now;
                }
            }
            Err(e) => {
                self.close(token, &format!("write error: {e}"));
                return;
            }
        }
        if conn.write_shut && conn.peer_closed {
            self.close(token, "closed");
            return;
        }
        let drained = conn.out.bytes() < before;
        // Publishers are resumed by the hub; everyone else once their own output drained.
        let is_publisher = matches!(conn.phase, Phase::WebSocket { role: Role::Publisher(_), .. });
        if conn.read_paused && !is_publisher && conn.out.cost() < limit {
            conn.read_paused = false;
            self.to_read.push(token);
        }
        if let Phase::WebSocket { role: Role::Watcher(name), .. } = &conn.phase
            && drained
        {
            let name = name.clone();
            let (hub, mut clients) = self.parts();
            hub.watcher_drained(&name, now, &mut clients);
        }
    }

    /// The output a connection may have queued for its own requests (HTTP responses,
    /// echoes, pongs) before its input stops being read.
    fn own_output_limit(&self) -> usize {
        self.config.max_message_bytes.max(1024 * 1024)
    }

    fn flush_scheduled(&mut self, now: Instant) {
        // Flushing may schedule more (a drained watcher resumes a publisher); loop until calm.
        while !self.to_flush.is_empty() {
            let mut flushing = std::mem::replace(&mut self.to_flush, std::mem::take(&mut self.spare));
            for token in flushing.drain(..) {
                self.flush(token, now);
            }
            self.spare = flushing;
        }
    }

    fn schedule_flush(&mut self, token: usize) {
        if self.conns.get_mut(token).is_some_and(Connection::claim_flush) {
            self.to_flush.push(token);
        }
    }

    /// Timers: request and close deadlines, idle pings and timeouts, hub rate limits.
    fn sweep(&mut self, now: Instant) {
        // An accept that failed (out of file descriptors) lost its edge: try again.
        if self.shutdown_deadline.is_none() {
            self.accept(now, false);
            self.accept(now, true);
        }
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut expired = Vec::new();
        let mut to_ping = Vec::new();
        for (token, conn) in self.conns.iter() {
            if conn.deadline.is_some_and(|d| now >= d) {
                expired.push(token);
            } else if conn.is_websocket() && !conn.close_sent {
                let silent = now.saturating_duration_since(conn.last_input);
                if silent >= idle {
                    expired.push(token);
                } else if silent >= idle / 2 && !conn.ping_sent {
                    to_ping.push(token);
                }
            }
        }
        for token in expired {
            self.on_deadline(token, now);
        }
        let ping = frame::encode(frame::OP_PING, b"");
        for token in to_ping {
            let conn = &mut self.conns[token];
            conn.ping_sent = true;
            conn.send(&ping, now);
            self.schedule_flush(token);
        }
        let (hub, mut clients) = self.parts();
        hub.tick(now, &mut clients);
    }

    fn on_deadline(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        // A response (or a final flush) still moving is not cut off: the deadline counts from
        // the last time the socket took bytes.
        let grace = match conn.phase {
            Phase::Http { .. } => Some(Duration::from_millis(self.config.request_timeout_ms)),
            Phase::Closing => Some(CLOSE_GRACE),
            Phase::WebSocket { .. } => None,
        };
        if let Some(grace) = grace
            && conn.has_output()
            && now < conn.last_write + grace
        {
            conn.deadline = Some(conn.last_write + grace);
            return;
        }
        match &conn.phase {
            Phase::Http { input, .. } if input.is_empty() && !conn.has_output() => {
                self.close(token, "idle keep-alive connection timed out")
            }
            Phase::Http { .. } => {
                log::info!("{}: request timed out (408)", conn.peer);
                self.respond_and_close(token, crate::http::response::Response::error(408), now);
            }
            Phase::WebSocket { .. } if conn.close_sent => {
                conn.close_code.get_or_insert(1006);
                self.close(token, "no close frame in reply");
            }
            Phase::WebSocket { .. } => self.start_close(token, 1001, "idle timeout", now),
            Phase::Closing => self.close(token, "closing timed out"),
        }
    }

    /// Queues a close frame and waits (until a deadline) for the peer's.
    fn start_close(&mut self, token: usize, code: u16, reason: &'static str, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.close_sent {
            return;
        }
        log::info!("{}: closing {} with {code} ({reason})", conn.peer, conn.kind());
        conn.send(&frame::close(code, reason), now);
        conn.close_sent = true;
        conn.close_code = Some(code);
        conn.deadline = Some(now + CLOSE_GRACE);
        self.schedule_flush(token);
    }

    /// Leaves the hub and the protocol: flush, shut the write side, wait for EOF.
    fn enter_closing(&mut self, token: usize, now: Instant) {
        self.detach(token, now);
        let Some(conn) = self.conns.get_mut(token) else { return };
        conn.phase = Phase::Closing;
        conn.read_paused = false;
        conn.deadline = Some(now + CLOSE_GRACE);
        self.schedule_flush(token);
    }

    /// Removes a WebSocket's role from the hub (its phase stays as is).
    fn detach(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        let Phase::WebSocket { role, .. } = &conn.phase else { return };
        let (name, is_publisher) = match role {
            Role::Publisher(name) => (name.clone(), true),
            Role::Watcher(name) => (name.clone(), false),
            Role::Echo => return,
        };
        log::info!("{}: {} of stream {name} left", conn.peer, role.kind());
        let (hub, mut clients) = self.parts();
        if is_publisher {
            hub.remove_publisher(&name, token, now, &mut clients);
        } else {
            hub.remove_watcher(&name, token, now, &mut clients);
        }
    }

    /// The one place a connection ends: out of the hub, deregistered, freed, logged.
    fn close(&mut self, token: usize, why: &str) {
        self.detach(token, Instant::now());
        let Some(mut conn) = self.conns.try_remove(token) else { return };
        let _ = self.poll.registry().deregister(conn.socket.tcp());
        // A WebSocket that ends with no close frame either way (a reset, a write error) is a 1006.
        if matches!(conn.phase, Phase::WebSocket { .. }) {
            conn.close_code.get_or_insert(1006);
        }
        if let Some(code) = conn.close_code {
            *self.metrics.ws_closes.entry(code).or_default() += 1;
            log::info!("{}: websocket closed ({code}): {why}", conn.peer);
        } else {
            log::debug!("{}: closed: {why}", conn.peer);
        }
    }

    /// The hub, and the connections seen through its `Clients` interface.
    fn parts(&mut self) -> (&mut Hub, Outbox<'_>) {
        (&mut self.hub, Outbox { conns: &mut self.conns, to_flush: &mut self.to_flush, to_read: &mut self.to_read })
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges { connections: Default::default(), streams: self.hub.stream_count(), queued_bytes: 0 };
        for (_, conn) in self.conns.iter() {
            *gauges.connections.entry(conn.kind()).or_default() += 1;
            gauges.queued_bytes += conn.out.bytes();
        }
        gauges
    }
}

/// The connections as the hub sees them.
struct Outbox<'a> {
    conns: &'a mut Slab<Connection>,
    to_flush: &'a mut Vec<usize>,
    to_read: &'a mut Vec<usize>,
}

impl Clients for Outbox<'_> {
    fn send(&mut self, token: usize, chunk: &Rc<Chunk>, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        conn.send(chunk, now);
        if conn.claim_flush() {
            self.to_flush.push(token);
        }
    }

    fn backlog(&self, token: usize, now: Instant) -> Backlog {
        self.conns
            .get(token)
            .map_or(Backlog::default(), |c| Backlog { bytes: c.out.cost(), oldest_wait: c.out.oldest_wait(now) })
    }

    fn close(&mut self, token: usize, code: u16, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.close_sent {
            return;
        }
        log::warn!("{}: closing with {code} ({reason})", conn.peer);
        // Its queue is what made it slow: drop what has not started, so the close goes out next.
        conn.out.discard_unsent();
        let now = Instant::now();
        conn.send(&frame::close(code, reason), now);
        conn.close_sent = true;
        conn.close_code = Some(code);
        conn.deadline = Some(now + CLOSE_GRACE);
        if conn.claim_flush() {
            self.to_flush.push(token);
        }
    }

    fn resume_reading(&mut self, token: usize) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.read_paused = false;
            self.to_read.push(token);
        }
    }
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Links must work from other machines: a wildcard bind is shown as this machine's first LAN
/// address (or `localhost` without one).
fn default_public_address(local: SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    let lan = if_addrs::get_if_addrs()
        .ok()
        .and_then(|interfaces| interfaces.into_iter().map(|i| i.ip()).find(|ip| ip.is_ipv4() && !ip.is_loopback()));
    match lan {
        Some(ip) => SocketAddr::new(ip, local.port()).to_string(),
        None => format!("localhost:{}", local.port()),
    }
}
