//! `relay-load`: the benchmarks' load generator (issue 4). One thread runs one mio loop with N
//! watchers on K streams and one publisher per stream, paced or as fast as TCP allows. Every
//! message carries its send time and a per-stream sequence number in its first 17 bytes, so a
//! watcher measures loss and latency from those bytes alone: the rest of each payload is
//! skipped, nothing is allocated per message, latencies go into a fixed log-linear histogram.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camrelay::ws::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;

#[path = "relay-load/soak.rs"]
mod soak;
#[path = "relay-load/tls.rs"]
mod tls;

const HELP: &str = "\
relay-load: WebSocket relay load generator (publishers and watchers in one mio loop)

USAGE: relay-load --url ws://127.0.0.1:PORT [options]
       relay-load --url ws://127.0.0.1:PORT --soak [--duration SECS] [soak options]

  --url URL          server base (ws:// or wss://); /ws/publish/loadI and /ws/watch/loadI are
                     appended
  --ca PATH          for wss://: PEM certificate(s) to trust (e.g. the server's
                     camrelay-self-signed.pem); the URL's host must be in the certificate
  --insecure         for wss://: accept any certificate (loopback benchmarks only)
  --streams K        streams, one publisher each (default 1)
  --watchers N       watchers in total, spread evenly over the streams (default 1)
  --size S           message payload bytes, at least 17 (default 1024)
  --rate R           messages per second per publisher; 0 = as fast as TCP allows (default 30)
  --duration SECS    measured time (default 10)
  --warmup SECS      traffic before it that is not counted (default 1)
  --idle             no publishers: hold the watchers for --duration, report server RSS per connection
  --server-pid PID   read the server's CPU time (/proc/PID/stat) and RSS (/proc/PID/status)
  --label TEXT       copied into the JSON line
  --json-only        print only the JSON line
  -h, --help         this text

Soak mode (issue 5), --soak: one publisher on stream load0 (--rate 30 --size 51200 unless given)
sends key frames (kind 2) every 30 messages and deltas (kind 3) otherwise, so the server's cache
and slow-watcher rules apply; --watchers (default 200 here) watch it for --duration seconds.
A --churn fraction of them (default 0.25) join, leave and stall at random: watch 2-20 s, then
leave or stall (stop reading) for 2-20 s, then resume or leave, and rejoin 0.5-5 s after leaving.
A watcher session that never stalled is well-behaved: every live message after its first one
must arrive (sequence gaps and, at the end, the missing tail are its loss; must be 0). Sessions
that stalled count their gaps as skips and the server's closes (1008) separately. Every
--report-every seconds (default 10) a line on stderr: elapsed, server RSS (--server-pid), server
connections (GET /metrics on the same host:port, plain HTTP, minus the scrape), messages
delivered, well-behaved loss. At the end a JSON line on stdout and a table on stderr, with the
server's RSS min/max after --warmup (default 10 here) and its connection count after we closed
every connection. --seed N makes the churn repeatable. Exit status 0 even with loss.

Payload: byte 0 = 0x05, bytes 1..9 = send time (us since start, u64 BE), bytes 9..17 = sequence
number per stream (u64 BE). All watchers finish their handshake before publishers start.
Counting: `sent`, `expected`, `received` and `lost` cover the messages sent after the warm-up;
the run ends when all of them arrived or after 2 s without any message arriving. Throughput
(delivered_*, msgs_per_s) and cpu_us_per_msg count every message delivered from the end of the
warm-up to that end, and the server CPU used over the same window. Latency runs from the send
stamp to the kernel's receive time (SO_TIMESTAMPNS) of the read that completed the message; the
table also shows it to the return of that read, which includes this one thread's turn-taking
over all the watchers.
Output: one JSON line on stdout, then a table on stderr. Exit status: 0 when the run completed
(even with loss), 2 for bad flags, 1 when it could not connect.
Every connection is a file descriptor and this program cannot raise its limit: run
`ulimit -n` with at least N + K + 32 first. For --idle, use a freshly started server.
";

/// Byte 0 of every payload: a kind the relay forwards but never caches.
const KIND_LOAD: u8 = 0x05;
/// Soak mode's kinds: a video key frame (cached, starts a group) and a delta frame.
const KIND_KEY: u8 = 0x02;
const KIND_DELTA: u8 = 0x03;
/// Kind, send time and sequence number: all a watcher reads of a payload.
const HEAD_LEN: usize = 17;
/// Clients must mask (RFC 6455 §5.3); a fixed key lets the publisher build its frames once.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The RFC 6455 §1.3 example key and its accept value: no hashing needed per connection.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const READ_BUF: usize = 256 * 1024;
/// Payload runs at least this long are discarded in the kernel rather than read.
const SKIP_MIN: u64 = 16 * 1024;
/// With big messages, what one read takes at a frame boundary: the longest header and the head.
const PEEK: usize = 10 + HEAD_LEN;
/// Bytes read or written for one connection before others get their turn.
const IO_BUDGET: usize = 1024 * 1024;
/// A publisher stamps and writes up to this many bytes of whole frames per write call.
const BATCH_BYTES: usize = 64 * 1024;
/// Handshakes in flight at once, so thousands of connects don't overflow the listen backlog.
const CONNECT_WINDOW: usize = 256;
const CONNECT_ATTEMPTS: u32 = 5;
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// After the last message is sent, how long watchers may go without receiving anything
/// before the messages still missing count as lost.
const DRAIN: Duration = Duration::from_secs(2);
const DRAIN_CAP: Duration = Duration::from_secs(60);
const CLOSE_GRACE: Duration = Duration::from_millis(500);

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

// ---------------------------------------------------------------------------------------------
// Flags

#[derive(Debug, Clone)]
struct Args {
    url: String,
    /// `host:port` for the Host header.
    authority: String,
    addr: SocketAddr,
    /// Path in front of `/ws/...` (the URL's path without its trailing slash).
    prefix: String,
    streams: usize,
    watchers: usize,
    size: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
    idle: bool,
    server_pid: Option<u32>,
    label: String,
    json_only: bool,
    /// `wss://`: the client configuration and the name to verify.
    tls: Option<TlsTarget>,
    soak: Option<soak::SoakArgs>,
}

#[derive(Clone)]
struct TlsTarget {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsTarget({:?})", self.name)
    }
}

#[derive(Debug)]
enum Cli {
    Run(Box<Args>),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut url = None;
    let (mut streams, mut watchers, mut size, mut rate) = (None::<usize>, None::<usize>, None::<usize>, None::<f64>);
    let (mut duration, mut warmup) = (10f64, None::<f64>);
    let (mut ca, mut insecure) = (None::<PathBuf>, false);
    let (mut soak_mode, mut churn, mut report_every, mut seed) = (false, 0.25f64, 10f64, None);
    let (mut idle, mut json_only, mut server_pid, mut label) = (false, false, None, String::new());
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("url") => url = Some(p.value().and_then(|v| v.string()).map_err(e)?),
            Long("streams") => streams = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("watchers") => watchers = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("size") => size = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("rate") => rate = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("duration") => duration = p.value().and_then(|v| v.parse()).map_err(e)?,
            Long("warmup") => warmup = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("ca") => ca = Some(p.value().map_err(e)?.into()),
            Long("insecure") => insecure = true,
            Long("soak") => soak_mode = true,
            Long("churn") => churn = p.value().and_then(|v| v.parse()).map_err(e)?,
            Long("report-every") => report_every = p.value().and_then(|v| v.parse()).map_err(e)?,
            Long("seed") => seed = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("idle") => idle = true,
            Long("server-pid") => server_pid = Some(p.value().and_then(|v| v.parse()).map_err(e)?),
            Long("label") => label = p.value().and_then(|v| v.string()).map_err(e)?,
            Long("json-only") => json_only = true,
            Short('h') | Long("help") => return Ok(Cli::Help),
            _ => return Err(e(arg.unexpected())),
        }
    }
    let url = url.ok_or("--url is required (e.g. --url ws://127.0.0.1:8888)")?;
    let (secure, authority, prefix) = parse_url(&url)?;
    // Soak mode has its own defaults: the issue's 30 × 50 KB to 200 watchers, 10 s of warm-up.
    let streams = streams.unwrap_or(1);
    let watchers = watchers.unwrap_or(if soak_mode { 200 } else { 1 });
    let size = size.unwrap_or(if soak_mode { 50 * 1024 } else { 1024 });
    let rate = rate.unwrap_or(30.0);
    let warmup = warmup.unwrap_or(if soak_mode { 10.0 } else { 1.0 });
    if soak_mode && (streams != 1 || idle || rate <= 0.0) {
        return Err("--soak runs one stream at a paced rate (no --streams, --idle or --rate 0)".into());
    }
    if !(churn.is_finite() && (0.0..=1.0).contains(&churn)) {
        return Err("--churn must be a fraction between 0 and 1".into());
    }
    if !(report_every.is_finite() && report_every > 0.0) {
        return Err("--report-every must be a positive number of seconds".into());
    }
    if (ca.is_some() || insecure) && !secure {
        return Err("--ca and --insecure are for wss:// URLs".into());
    }
    let tls = if secure {
        let config = tls::client_config(ca.as_deref(), insecure)?;
        Some(TlsTarget { config, name: tls::server_name(&authority)? })
    } else {
        None
    };
    let soak = soak_mode.then_some(soak::SoakArgs { churn, report_every, seed });
    if streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    if size < HEAD_LEN {
        return Err(format!("--size must be at least {HEAD_LEN} (kind, send time, sequence number)"));
    }
    if !(rate.is_finite() && rate >= 0.0) {
        return Err("--rate must be a number >= 0".into());
    }
    if !(duration.is_finite() && duration > 0.0 && duration < 1e6) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(warmup.is_finite() && (0.0..1e6).contains(&warmup)) {
        return Err("--warmup must be a number of seconds >= 0".into());
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {authority}: {err}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let args = Args {
        url,
        authority,
        addr,
        prefix,
        streams,
        watchers,
        size,
        rate,
        duration,
        warmup,
        idle,
        server_pid,
        label,
        json_only,
        tls,
        soak,
    };
    Ok(Cli::Run(Box::new(args)))
}

/// Splits `ws[s]://host[:port][/prefix]` into whether it is `wss`, `host:port` and the prefix.
fn parse_url(url: &str) -> Result<(bool, String, String), String> {
    let (secure, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let default_port = if secure { 443 } else { 80 };
    let authority = if has_port { authority.to_owned() } else { format!("{authority}:{default_port}") };
    Ok((secure, authority, path.trim_end_matches('/').to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Latency histogram

/// Log-linear buckets: values below 64 µs are exact, above that each power of two is cut into
/// 32 buckets, so a percentile is at most 1/32 (3.1%) above the true value. Fixed size: recording
/// never allocates, whatever the number of messages.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const LINEAR: u64 = 2 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    fn bucket(v: u64) -> usize {
        if v < LINEAR {
            v as usize
        } else {
            let e = 63 - v.leading_zeros();
            let sub = (v >> (e - SUB_BITS)) as usize - SUB;
            LINEAR as usize + (e - SUB_BITS - 1) as usize * SUB + sub
        }
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < LINEAR as usize {
            return i as u64;
        }
        let k = i - LINEAR as usize;
        let shift = (k / SUB) as u32 + 1;
        (((SUB + k % SUB) as u64) << shift) + ((1u64 << shift) - 1)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// The value at percentile `p` (0..=100), rounded up to its bucket's top; `None` when empty.
    fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------------------
// Server-to-client frame parser

/// A frame that breaks RFC 6455 §5.2 as a server must follow it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum FrameError {
    ReservedBitsSet,
    UnknownOpcode(u8),
    /// §5.1: a server MUST NOT mask frames it sends.
    MaskedServerFrame,
    /// §5.5: control frames are final and carry at most 125 bytes.
    BadControlFrame,
    UnexpectedContinuation,
    ExpectedContinuation,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the parser found; slices borrow the parser's small buffers.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    /// A complete data message: its opcode, its first `HEAD_LEN` payload bytes (all of them if
    /// shorter) and its total length.
    Message {
        opcode: u8,
        head: &'a [u8],
        len: u64,
    },
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

/// A streaming parser that keeps only a frame header, the head of the current message and a
/// control payload: payload bytes past the head are counted and skipped, never copied.
struct FrameParser {
    hdr: [u8; 10],
    hdr_len: usize,
    in_payload: bool,
    fin: bool,
    opcode: u8,
    remaining: u64,
    /// Opcode of the data message being received, 0 between messages.
    msg_opcode: u8,
    msg_len: u64,
    head: [u8; HEAD_LEN],
    head_len: usize,
    ctrl: [u8; 125],
    ctrl_len: usize,
    /// Length of the last complete data message: tells the reader whether payloads are big.
    last_len: u64,
}

impl FrameParser {
    fn new() -> FrameParser {
        FrameParser {
            hdr: [0; 10],
            hdr_len: 0,
            in_payload: false,
            fin: false,
            opcode: 0,
            remaining: 0,
            msg_opcode: 0,
            msg_len: 0,
            head: [0; HEAD_LEN],
            head_len: 0,
            ctrl: [0; 125],
            ctrl_len: 0,
            last_len: 0,
        }
    }

    /// Payload bytes that may be dropped unseen now: the rest of a data frame whose message
    /// head is complete.
    fn skippable(&self) -> u64 {
        if self.in_payload && self.opcode < OP_CLOSE && self.head_len == HEAD_LEN { self.remaining } else { 0 }
    }

    /// Accounts for `n <= skippable()` payload bytes that were discarded without being read.
    fn skip(&mut self, n: u64, mut on: impl FnMut(Event)) {
        debug_assert!(n <= self.skippable());
        self.remaining -= n;
        self.msg_len += n;
        if self.remaining == 0 {
            self.end_frame(&mut on);
        }
    }

    /// Consumes all of `data`, calling `on` for every message and control frame it completes.
    /// After an error the parser is unusable.
    fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Event)) -> Result<(), FrameError> {
        while !data.is_empty() {
            if !self.in_payload {
                // Two fixed bytes, then the extended length the second one announces.
                let mut need = if self.hdr_len < 2 { 2 } else { Self::header_len(self.hdr[1])? };
                loop {
                    let take = (need - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                    self.hdr_len += take;
                    data = &data[take..];
                    if self.hdr_len < need {
                        return Ok(());
                    }
                    let full = Self::header_len(self.hdr[1])?;
                    if full == need {
                        break;
                    }
                    need = full;
                }
                self.begin_frame()?;
                if self.remaining == 0 {
                    self.end_frame(&mut on);
                }
                continue;
            }
            let take = self.remaining.min(data.len() as u64) as usize;
            let (bytes, rest) = data.split_at(take);
            if self.opcode >= OP_CLOSE {
                self.ctrl[self.ctrl_len..self.ctrl_len + take].copy_from_slice(bytes);
                self.ctrl_len += take;
            } else {
                let n = (HEAD_LEN - self.head_len).min(take);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                self.msg_len += take as u64;
            }
            data = rest;
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.end_frame(&mut on);
            }
        }
        Ok(())
    }

    fn header_len(b1: u8) -> Result<usize, FrameError> {
        if b1 & 0x80 != 0 {
            return Err(FrameError::MaskedServerFrame);
        }
        Ok(match b1 & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        })
    }

    fn begin_frame(&mut self) -> Result<(), FrameError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBitsSet);
        }
        let len = match b1 & 0x7f {
            126 => u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64,
            127 => u64::from_be_bytes(self.hdr[2..10].try_into().expect("8 bytes")),
            n => n as u64,
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        match opcode {
            OP_CONTINUATION if self.msg_opcode == 0 => return Err(FrameError::UnexpectedContinuation),
            OP_CONTINUATION => {}
            OP_TEXT | OP_BINARY if self.msg_opcode != 0 => return Err(FrameError::ExpectedContinuation),
            OP_TEXT | OP_BINARY => {
                self.msg_opcode = opcode;
                self.msg_len = 0;
                self.head_len = 0;
            }
            OP_CLOSE | OP_PING | OP_PONG if !fin || len > 125 => return Err(FrameError::BadControlFrame),
            OP_CLOSE | OP_PING | OP_PONG => self.ctrl_len = 0,
            other => return Err(FrameError::UnknownOpcode(other)),
        }
        self.hdr_len = 0;
        self.in_payload = true;
        self.fin = fin;
        self.opcode = opcode;
        self.remaining = len;
        Ok(())
    }

    fn end_frame(&mut self, on: &mut impl FnMut(Event)) {
        self.in_payload = false;
        match self.opcode {
            OP_PING => on(Event::Ping(&self.ctrl[..self.ctrl_len])),
            OP_PONG => on(Event::Pong),
            OP_CLOSE => {
                let code = (self.ctrl_len >= 2).then(|| u16::from_be_bytes([self.ctrl[0], self.ctrl[1]]));
                on(Event::Close(code));
            }
            _ if self.fin => {
                on(Event::Message { opcode: self.msg_opcode, head: &self.head[..self.head_len], len: self.msg_len });
                self.msg_opcode = 0;
                self.last_len = self.msg_len;
            }
            _ => {}
        }
    }
}

/// A final client frame (masked, §5.3) with `payload`, appended to `out`.
fn push_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

// ---------------------------------------------------------------------------------------------
// Publishers

/// One publisher's frames: `max_batch` copies of the same masked frame back to back. Sending a
/// batch only rewrites the 16 stamped bytes of each frame (masked like the rest) and writes the
/// whole batch in one call.
struct Publisher {
    token: usize,
    stream: usize,
    frame_len: usize,
    payload_at: usize,
    max_batch: usize,
    batch: Vec<u8>,
    /// The unsent part of the batch is `batch[pos..len]`.
    pos: usize,
    len: usize,
    next_seq: u64,
    /// When its first message is due (publishers are staggered over one interval).
    start: Instant,
    /// Soak mode: every this many messages a key frame (kind 2), deltas (kind 3) between;
    /// 0 = every message is `KIND_LOAD`.
    keyframe_every: u64,
}

impl Publisher {
    fn new(token: usize, stream: usize, size: usize) -> Publisher {
        let payload: Vec<u8> = (0..size).map(|i| if i == 0 { KIND_LOAD } else { (i % 251) as u8 }).collect();
        let mut frame = Vec::with_capacity(size + 14);
        push_masked_frame(&mut frame, OP_BINARY, &payload);
        let max_batch = (BATCH_BYTES / frame.len()).max(1);
        Publisher {
            token,
            stream,
            frame_len: frame.len(),
            payload_at: frame.len() - size,
            max_batch,
            batch: frame.repeat(max_batch),
            pos: 0,
            len: 0,
            next_seq: 0,
            start: Instant::now(),
            keyframe_every: 0,
        }
    }

    /// Messages due now: all that the rate allows so far (catching up after a late wake-up),
    /// at most one batch.
    fn due(&self, now: Instant, rate: f64) -> usize {
        if rate <= 0.0 {
            return self.max_batch;
        }
        if now < self.start {
            return 0;
        }
        // The epsilon keeps float rounding from missing a message exactly at its due time.
        let total = ((now - self.start).as_secs_f64() * rate + 1e-9).floor() as u64 + 1;
        total.saturating_sub(self.next_seq).min(self.max_batch as u64) as usize
    }

    fn next_due_at(&self, rate: f64) -> Instant {
        self.start + Duration::from_secs_f64(self.next_seq as f64 / rate)
    }

    /// Stamps the next `n` messages with `now_us` and their sequence numbers and makes them the
    /// unsent batch.
    fn stamp(&mut self, n: usize, now_us: u64) {
        for k in 0..n {
            let at = k * self.frame_len + self.payload_at + 1;
            let mut plain = [0u8; 16];
            plain[..8].copy_from_slice(&now_us.to_be_bytes());
            plain[8..].copy_from_slice(&self.next_seq.to_be_bytes());
            // Payload byte i is masked with MASK[i % 4]; these are payload bytes 1..17.
            for (j, b) in plain.iter().enumerate() {
                self.batch[at + j] = b ^ MASK[(1 + j) % 4];
            }
            if self.keyframe_every > 0 {
                let kind = if self.next_seq.is_multiple_of(self.keyframe_every) { KIND_KEY } else { KIND_DELTA };
                self.batch[at - 1] = kind ^ MASK[0];
            }
            self.next_seq += 1;
        }
        self.pos = 0;
        self.len = n * self.frame_len;
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and accounting

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Watcher,
    /// Index into `Run::pubs`.
    Publisher(usize),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Not started, or waiting for a retry.
    Queued,
    Connecting,
    /// Writing the upgrade request, then reading the response.
    Handshake,
    Open,
    /// We sent a close frame and wait for the server to hang up.
    Closing,
    Done,
}

/// A watcher's view of its stream's sequence numbers.
#[derive(Default, Debug)]
struct Acct {
    next_seq: u64,
    /// Messages of the measured range skipped over (sequence gaps).
    gaps: u64,
    /// Soak mode, per session: when the handshake completed (µs), the publisher's next sequence
    /// number then, the first message sent after it (gaps count only from there), and how many
    /// messages arrived.
    opened_us: u64,
    join_seq: u64,
    first_live: Option<u64>,
    messages: u64,
}

struct Conn {
    role: Role,
    stream: usize,
    sock: Option<TcpStream>,
    phase: Phase,
    attempts: u32,
    req_sent: usize,
    resp: Vec<u8>,
    /// Readiness the OS reported and we have not used up yet (edge-triggered).
    readable: bool,
    writable: bool,
    /// In `Run::pending`: its I/O budget ran out with work left.
    queued: bool,
    opened: bool,
    parser: FrameParser,
    /// Pongs and close frames waiting to be written.
    ctrl_out: Vec<u8>,
    close_code: Option<Option<u16>>,
    acct: Acct,
    /// `wss://`: the TLS session between the socket and the WebSocket bytes.
    tls: Option<Box<ClientConnection>>,
    /// Soak mode: not reading (a stalled viewer); it stalled at least once this session.
    stalled: bool,
    stalled_ever: bool,
}

impl Conn {
    fn new(role: Role, stream: usize) -> Conn {
        Conn {
            role,
            stream,
            sock: None,
            phase: Phase::Queued,
            attempts: 0,
            req_sent: 0,
            resp: Vec::new(),
            readable: false,
            writable: false,
            queued: false,
            opened: false,
            parser: FrameParser::new(),
            ctrl_out: Vec::new(),
            close_code: None,
            acct: Acct::default(),
            tls: None,
            stalled: false,
            stalled_ever: false,
        }
    }
}

/// The generator's time base: µs since it started, on the monotonic clock. Kernel receive
/// timestamps are on the real-time clock; `epoch_real_ns` maps them onto it.
struct Clock {
    epoch: Instant,
    epoch_real_ns: i128,
}

/// When a read's bytes arrived: the kernel's receive time of its last segment (when the socket
/// has timestamps), and when our read returned.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    arrived_us: u64,
    read_us: u64,
}

impl Clock {
    fn new() -> Clock {
        let epoch = Instant::now();
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Clock { epoch, epoch_real_ns: real.map_or(0, |d| d.as_nanos() as i128) }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The arrival of bytes just read; a receive time later than the read (a clock step) is
    /// not believed.
    fn arrival(&self, real_ns: Option<i128>) -> Arrival {
        let read_us = self.now_us();
        let arrived_us = match real_ns {
            Some(ns) => ((ns - self.epoch_real_ns) / 1000).clamp(0, read_us as i128) as u64,
            None => read_us,
        };
        Arrival { arrived_us, read_us }
    }
}

/// Counts what watchers receive. A stream's measured messages are the sequence numbers in
/// `m0[s]..m1[s]`: those sent between the end of the warm-up and the end of the run.
///
/// Throughput and CPU per message use every load message delivered while `counting` (from the
/// end of the warm-up to the end of the drain), whatever its sequence number: at full speed the
/// server may still be delivering warm-up messages when the measured ones start.
struct Meter {
    m0: Vec<u64>,
    m1: Vec<u64>,
    /// Latency to the kernel's receive timestamp, and to the return of our read.
    hist: Histogram,
    hist_read: Histogram,
    received: u64,
    out_of_order: u64,
    counting: bool,
    delivered: u64,
    delivered_bytes: u64,
    /// When the last load message arrived (µs since start).
    last_any_us: u64,
    /// Soak mode: per-session accounting (`record_soak`) instead of the measured range.
    soak: bool,
}

impl Meter {
    fn new(streams: usize) -> Meter {
        Meter {
            m0: vec![u64::MAX; streams],
            m1: vec![u64::MAX; streams],
            hist: Histogram::new(),
            hist_read: Histogram::new(),
            received: 0,
            out_of_order: 0,
            counting: false,
            delivered: 0,
            delivered_bytes: 0,
            last_any_us: 0,
            soak: false,
        }
    }

    fn record(&mut self, stream: usize, acct: &mut Acct, head: &[u8], len: u64, at: Arrival) {
        let sent_us = u64::from_be_bytes(head[1..9].try_into().expect("8 bytes"));
        let seq = u64::from_be_bytes(head[9..17].try_into().expect("8 bytes"));
        if self.soak {
            return self.record_soak(acct, sent_us, seq, len, at);
        }
        let (m0, m1) = (self.m0[stream], self.m1[stream]);
        if seq < acct.next_seq {
            self.out_of_order += 1;
            return;
        }
        self.last_any_us = at.read_us;
        if self.counting {
            self.delivered += 1;
            self.delivered_bytes += len;
        }
        let (lo, hi) = (acct.next_seq.max(m0), seq.min(m1));
        acct.gaps += hi.saturating_sub(lo);
        acct.next_seq = seq + 1;
        if (m0..m1).contains(&seq) {
            self.received += 1;
            self.hist.record(at.arrived_us.saturating_sub(sent_us));
            self.hist_read.record(at.read_us.saturating_sub(sent_us));
        }
    }

    /// Soak mode: a session first gets the cached group (older messages), then live ones; gaps
    /// count from the first message sent after it joined.
    fn record_soak(&mut self, acct: &mut Acct, sent_us: u64, seq: u64, len: u64, at: Arrival) {
        if acct.messages > 0 && seq < acct.next_seq {
            self.out_of_order += 1;
            return;
        }
        self.last_any_us = at.read_us;
        self.delivered += 1;
        self.delivered_bytes += len;
        match acct.first_live {
            Some(_) => acct.gaps += seq - acct.next_seq,
            None if sent_us >= acct.opened_us => acct.first_live = Some(seq),
            None => {}
        }
        acct.next_seq = seq + 1;
        acct.messages += 1;
    }

    /// Measured messages a watcher never got: gaps plus the tail after its last message.
    fn lost(&self, stream: usize, acct: &Acct) -> u64 {
        let (m0, m1) = (self.m0[stream], self.m1[stream]);
        if m0 >= m1 {
            return 0;
        }
        acct.gaps + m1.saturating_sub(acct.next_seq.max(m0))
    }
}

/// What a read produced: bytes, or a count of payload bytes discarded unseen.
enum Input<'a> {
    Bytes(&'a [u8]),
    Skipped(u64),
}

/// Feeds what a connection received to its parser and acts on what it finds.
fn ingest(c: &mut Conn, input: Input, at: Arrival, meter: &mut Meter) -> Result<(), FrameError> {
    let Conn { parser, acct, ctrl_out, close_code, role, stream, .. } = c;
    let (watcher, stream) = (*role == Role::Watcher, *stream);
    let on = |event: Event| match event {
        Event::Message { opcode: OP_BINARY, head, len }
            if watcher && head.len() == HEAD_LEN && matches!(head[0], KIND_LOAD | KIND_KEY | KIND_DELTA) =>
        {
            meter.record(stream, acct, head, len, at)
        }
        // Text events of our server, other kinds, publisher-side events: not counted.
        Event::Message { .. } | Event::Pong => {}
        Event::Ping(payload) => push_masked_frame(ctrl_out, OP_PONG, payload),
        Event::Close(code) => {
            close_code.get_or_insert(code);
        }
    };
    match input {
        Input::Bytes(data) => parser.feed(data, on),
        Input::Skipped(n) => {
            parser.skip(n, on);
            Ok(())
        }
    }
}

/// A non-blocking write of WebSocket bytes: straight to the socket, or through TLS.
fn send(sock: &mut TcpStream, tls: &mut Option<Box<ClientConnection>>, data: &[u8]) -> io::Result<usize> {
    match tls {
        None => sock.write(data),
        Some(tls) => tls::send(sock, tls, data),
    }
}

/// A non-blocking read of WebSocket bytes: straight from the socket, or through TLS.
fn recv(sock: &mut TcpStream, tls: &mut Option<Box<ClientConnection>>, buf: &mut [u8]) -> io::Result<usize> {
    match tls {
        None => sock.read(buf),
        Some(tls) => tls::recv(sock, tls, buf),
    }
}

/// Writes as much of `out` as the socket takes, then any TLS records still pending; `Ok(false)`
/// when it would block.
fn write_some(sock: &mut TcpStream, tls: &mut Option<Box<ClientConnection>>, out: &mut Vec<u8>) -> io::Result<bool> {
    while !out.is_empty() {
        match send(sock, tls, out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match tls {
        None => Ok(true),
        Some(tls) => tls::flush(sock, tls),
    }
}

/// Reads plaintext through TLS and parses it for `c`, until drained, closed or over budget.
/// Every byte is decrypted anyway, so nothing is discarded in the kernel, and records carry no
/// receive timestamp: latency runs to the return of the read.
fn read_tls_into(
    sock: &mut TcpStream,
    tls: &mut ClientConnection,
    c: &mut Conn,
    buf: &mut [u8],
    clock: &Clock,
    meter: &mut Meter,
) -> After {
    let mut total = 0;
    loop {
        match tls::recv(sock, tls, buf) {
            Ok(0) => return After::Lost("closed by the server without a close frame".into()),
            Ok(n) => {
                if let Err(e) = ingest(c, Input::Bytes(&buf[..n]), clock.arrival(None), meter) {
                    return After::Lost(format!("protocol error: {e}"));
                }
                if c.close_code.is_some() {
                    return After::Fine;
                }
                total += n;
                if total >= IO_BUDGET {
                    return After::More;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return After::Fine;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return After::Lost(format!("read: {e}")),
        }
    }
}

/// Reads from `sock` and parses what arrives for `c`, until drained, closed or over budget.
///
/// Small messages are read in large chunks. Once messages are big, only their headers and heads
/// are read (`PEEK` bytes at a time) and the rest of each payload is dropped in the kernel with
/// `MSG_TRUNC`: copying every byte out would make the generator, not the server, the limit.
fn read_into(sock: &mut TcpStream, c: &mut Conn, buf: &mut [u8], clock: &Clock, meter: &mut Meter) -> After {
    let mut total = 0;
    loop {
        let skippable = c.parser.skippable();
        let discard = skippable >= SKIP_MIN;
        let asked = if discard {
            skippable.min(buf.len() as u64) as usize
        } else if c.parser.last_len >= SKIP_MIN {
            (skippable as usize + PEEK).min(buf.len())
        } else {
            buf.len()
        };
        match sys::receive(sock, &mut buf[..asked], discard) {
            Ok((0, _)) => return After::Lost("closed by the server without a close frame".into()),
            Ok((n, stamp)) => {
                let at = clock.arrival(stamp);
                let input = if discard { Input::Skipped(n as u64) } else { Input::Bytes(&buf[..n]) };
                if let Err(e) = ingest(c, input, at, meter) {
                    return After::Lost(format!("protocol error: {e}"));
                }
                if c.close_code.is_some() {
                    return After::Fine;
                }
                // A short read emptied the socket; epoll reports the next bytes as a new edge,
                // so this saves the read that would only say WouldBlock.
                if n < asked {
                    c.readable = false;
                    return After::Fine;
                }
                total += n;
                if total >= IO_BUDGET {
                    return After::More;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return After::Fine;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return After::Lost(format!("read: {e}")),
        }
    }
}

/// Socket calls std does not offer, declared against the C library std already links (the crate
/// has no `libc` dependency): receive timestamps and `MSG_TRUNC`. Little-endian 64-bit Linux
/// only; elsewhere plain reads without timestamps.
mod sys {
    #[cfg(all(target_os = "linux", target_pointer_width = "64", target_endian = "little"))]
    pub use linux::{enable_rx_timestamps, receive};

    #[cfg(all(target_os = "linux", target_pointer_width = "64", target_endian = "little"))]
    mod linux {
        use std::ffi::{c_int, c_void};
        use std::io;
        use std::os::fd::AsRawFd;

        use mio::net::TcpStream;

        const SOL_SOCKET: c_int = 1;
        /// Also the type of its control message (SCM_TIMESTAMPNS): a struct timespec, on
        /// CLOCK_REALTIME, of when the last segment a read consumed reached the socket.
        const SO_TIMESTAMPNS: c_int = 35;
        const MSG_TRUNC: c_int = 0x20;
        const MSG_DONTWAIT: c_int = 0x40;

        #[repr(C)]
        struct IoVec {
            base: *mut c_void,
            len: usize,
        }

        /// struct msghdr.
        #[repr(C)]
        struct MsgHdr {
            name: *mut c_void,
            namelen: u32,
            iov: *mut IoVec,
            iovlen: usize,
            control: *mut c_void,
            controllen: usize,
            flags: c_int,
        }

        unsafe extern "C" {
            fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
            fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
        }

        pub fn enable_rx_timestamps(sock: &TcpStream) -> bool {
            let on: c_int = 1;
            // SAFETY: a pointer to a live c_int and its size.
            unsafe { setsockopt(sock.as_raw_fd(), SOL_SOCKET, SO_TIMESTAMPNS, (&raw const on).cast(), 4) == 0 }
        }

        /// Reads into `buf`, or with `discard` drops up to `buf.len()` bytes in the kernel without
        /// copying them (`MSG_TRUNC`, tcp(7)). Also returns the receive timestamp (ns since the
        /// Unix epoch) when the socket has them enabled.
        pub fn receive(sock: &mut TcpStream, buf: &mut [u8], discard: bool) -> io::Result<(usize, Option<i128>)> {
            let mut control = [0u64; 8];
            let mut iov = IoVec { base: buf.as_mut_ptr().cast(), len: buf.len() };
            let mut msg = MsgHdr {
                name: std::ptr::null_mut(),
                namelen: 0,
                iov: &raw mut iov,
                iovlen: 1,
                control: control.as_mut_ptr().cast(),
                controllen: size_of_val(&control),
                flags: 0,
            };
            let flags = MSG_DONTWAIT | if discard { MSG_TRUNC } else { 0 };
            // SAFETY: the descriptor stays open while `sock` is borrowed; every pointer in `msg`
            // refers to a live local or to `buf`, with its true length, and recvmsg writes
            // within those only.
            let n = unsafe { recvmsg(sock.as_raw_fd(), &raw mut msg, flags) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((n as usize, super::timestamp(&control, msg.controllen)))
        }
    }

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
    pub fn enable_rx_timestamps(_sock: &mio::net::TcpStream) -> bool {
        false
    }

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
    pub fn receive(
        sock: &mut mio::net::TcpStream,
        buf: &mut [u8],
        _discard: bool,
    ) -> std::io::Result<(usize, Option<i128>)> {
        std::io::Read::read(sock, buf).map(|n| (n, None))
    }

    /// Finds SCM_TIMESTAMPNS among control messages laid out as 64-bit little-endian words:
    /// struct cmsghdr is (size_t len, int level, int type), its data starts 16 bytes in.
    #[cfg_attr(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")), allow(dead_code))]
    pub fn timestamp(control: &[u64], len: usize) -> Option<i128> {
        const SOL_SOCKET: u64 = 1;
        const SCM_TIMESTAMPNS: u64 = 35;
        let words = (len / 8).min(control.len());
        let mut at = 0;
        while at + 2 <= words {
            let cmsg_len = control[at] as usize;
            if cmsg_len < 16 {
                break;
            }
            let (level, kind) = (control[at + 1] & 0xffff_ffff, control[at + 1] >> 32);
            if level == SOL_SOCKET && kind == SCM_TIMESTAMPNS && cmsg_len >= 32 && at + 4 <= words {
                let (sec, nsec) = (control[at + 2] as i64, control[at + 3] as i64);
                return Some(sec as i128 * 1_000_000_000 + nsec as i128);
            }
            at += cmsg_len.div_ceil(8);
        }
        None
    }
}

fn is_fd_exhausted(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// What a read pass left to do.
enum After {
    Fine,
    More,
    Lost(String),
}

// ---------------------------------------------------------------------------------------------
// The run

struct Run {
    args: Args,
    poll: Poll,
    conns: Vec<Conn>,
    pubs: Vec<Publisher>,
    buf: Vec<u8>,
    clock: Clock,
    meter: Meter,
    /// Connections whose I/O budget ran out with work left: served again next tick.
    pending: Vec<usize>,
    retries: Vec<(Instant, usize)>,
    queue: VecDeque<usize>,
    in_flight: usize,
    /// Publishers stamp new messages only while this is set.
    sending: bool,
    connect_failures: u64,
    closed_by_server: u64,
    /// Why connections failed or ended early, with counts (for the table).
    problems: BTreeMap<String, u64>,
    fatal: Option<String>,
    /// Soak mode's churn plans and per-session totals.
    soak: Option<Box<soak::Soak>>,
}

/// Readings of the server process.
#[derive(Default, Clone, Copy)]
struct ServerProbe {
    cpu_s: Option<f64>,
    rss_kb: Option<u64>,
    peak_rss_kb: Option<u64>,
}

impl Run {
    fn new(args: Args) -> Result<Run, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let mut conns: Vec<Conn> = (0..args.watchers).map(|i| Conn::new(Role::Watcher, i % args.streams)).collect();
        let mut pubs = Vec::new();
        if !args.idle {
            for s in 0..args.streams {
                let token = conns.len();
                conns.push(Conn::new(Role::Publisher(pubs.len()), s));
                pubs.push(Publisher::new(token, s, args.size));
            }
        }
        let meter = Meter::new(args.streams);
        Ok(Run {
            args,
            poll,
            conns,
            pubs,
            buf: vec![0; READ_BUF],
            clock: Clock::new(),
            meter,
            pending: Vec::new(),
            retries: Vec::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            sending: false,
            connect_failures: 0,
            closed_by_server: 0,
            problems: BTreeMap::new(),
            fatal: None,
            soak: None,
        })
    }

    fn say(&self, line: std::fmt::Arguments) {
        if !self.args.json_only {
            eprintln!("relay-load: {line}");
        }
    }

    fn probe(&self) -> ServerProbe {
        let Some(pid) = self.args.server_pid else { return ServerProbe::default() };
        ServerProbe {
            cpu_s: proc_cpu_s(&pid.to_string()),
            rss_kb: proc_status_kb(pid, "VmRSS"),
            peak_rss_kb: proc_status_kb(pid, "VmHWM"),
        }
    }

    fn execute(mut self) -> Result<Report, String> {
        let mut events = Events::with_capacity(1024);
        let (w, k) = (self.args.watchers, self.args.streams);
        let before = self.probe();
        if self.args.server_pid.is_some() && before.cpu_s.is_none() {
            return Err(format!("cannot read /proc/{}/stat", self.args.server_pid.unwrap_or(0)));
        }
        self.say(format_args!("connecting {w} watchers on {k} streams to {}", self.args.url));
        let t = Instant::now();
        self.connect_group(0..w, &mut events)?;
        let watchers_open = self.conns[..w].iter().filter(|c| c.opened).count();
        self.say(format_args!("{watchers_open} watchers open in {:.2} s", t.elapsed().as_secs_f64()));
        if w > 0 && watchers_open == 0 {
            return Err(format!("no watcher could connect to {}{}", self.args.url, self.problem_summary()));
        }
        let mut report = Report::new(&self.args);
        if self.args.idle {
            let start = self.probe();
            let hold_end = Instant::now() + Duration::from_secs_f64(self.args.duration);
            self.run_until(hold_end, &mut events)?;
            let end = self.probe();
            report.window_s = self.args.duration;
            report.server_cpu_s = end.cpu_s.zip(start.cpu_s).map(|(b, a)| b - a);
            report.idle_rss_per_conn_bytes = end
                .rss_kb
                .zip(before.rss_kb)
                .filter(|_| watchers_open > 0)
                .map(|(b, a)| (b as i64 - a as i64) * 1024 / watchers_open as i64);
            report.server_rss_kb = end.rss_kb;
            report.server_peak_rss_kb = end.peak_rss_kb;
        } else {
            self.connect_group(w..w + k, &mut events)?;
            let pubs_open = self.conns[w..].iter().filter(|c| c.opened).count();
            if pubs_open == 0 {
                return Err(format!("no publisher could connect to {}{}", self.args.url, self.problem_summary()));
            }
            self.traffic(&mut events, &mut report)?;
        }
        report.connect_failures = self.connect_failures;
        report.closed_by_server = self.closed_by_server;
        report.out_of_order = self.meter.out_of_order;
        report.connected = watchers_open;
        report.problems = std::mem::take(&mut self.problems);
        self.close_all(&mut events);
        report.own_cpu_s = proc_cpu_s("self");
        Ok(report)
    }

    fn problem_summary(&self) -> String {
        let list: Vec<String> = self.problems.iter().map(|(why, n)| format!("{why} ×{n}")).collect();
        if list.is_empty() { String::new() } else { format!(": {}", list.join(", ")) }
    }

    fn problem(&mut self, why: String) {
        *self.problems.entry(why).or_default() += 1;
    }

    /// Sends for warm-up + duration, then drains; fills in the traffic part of `report`.
    fn traffic(&mut self, events: &mut Events, report: &mut Report) -> Result<(), String> {
        let args = self.args.clone();
        let start = Instant::now();
        let k = self.pubs.len();
        for (i, p) in self.pubs.iter_mut().enumerate() {
            // Spread the publishers over one interval rather than sending all at once.
            let offset = if args.rate > 0.0 { i as f64 / (k as f64 * args.rate) } else { 0.0 };
            p.start = start + Duration::from_secs_f64(offset);
        }
        let t_warm = start + Duration::from_secs_f64(args.warmup);
        let t_end = t_warm + Duration::from_secs_f64(args.duration);
        self.say(format_args!("sending for {} s after {} s of warm-up", args.duration, args.warmup));
        self.sending = true;
        self.run_until(t_warm, events)?;
        // The window runs from these two readings of the sequence numbers (a busy machine may
        // wake us late; the counts and the time then still match).
        let warm_us = self.clock.now_us();
        let open: Vec<bool> = self.pubs.iter().map(|p| self.conns[p.token].opened).collect();
        for (p, &open) in self.pubs.iter().zip(&open) {
            self.meter.m0[p.stream] = if open { p.next_seq } else { 0 };
        }
        let cpu0 = self.probe().cpu_s;
        self.meter.counting = true;
        self.run_until(t_end, events)?;
        self.sending = false;
        let end_us = self.clock.now_us();
        for (p, &open) in self.pubs.iter().zip(&open) {
            self.meter.m1[p.stream] = if open { p.next_seq } else { 0 };
        }
        let mut watchers_per_stream = vec![0u64; args.streams];
        for c in self.conns.iter().filter(|c| c.opened && c.role == Role::Watcher) {
            watchers_per_stream[c.stream] += 1;
        }
        let sent: u64 = (0..args.streams).map(|s| self.meter.m1[s].saturating_sub(self.meter.m0[s])).sum();
        let expected: u64 =
            (0..args.streams).map(|s| self.meter.m1[s].saturating_sub(self.meter.m0[s]) * watchers_per_stream[s]).sum();
        // Drain: until everything arrived, or nothing arrived for DRAIN (a server at full speed
        // may hold seconds of queued messages), and never longer than DRAIN_CAP.
        let cap = Instant::now() + DRAIN_CAP;
        loop {
            let flushed = self.pubs.iter().all(|p| p.pos == p.len || !self.conns[p.token].opened);
            if flushed && self.meter.received >= expected {
                break;
            }
            let last = self.clock.epoch + Duration::from_micros(self.meter.last_any_us.max(end_us));
            let quiet_end = (last + DRAIN).min(cap);
            if Instant::now() >= quiet_end {
                break;
            }
            self.tick(events, Some(quiet_end))?;
        }
        self.meter.counting = false;
        let end = self.probe();
        let window_us = self.meter.last_any_us.max(end_us).saturating_sub(warm_us).max(1);
        let window_s = window_us as f64 / 1e6;
        let lost: u64 = self
            .conns
            .iter()
            .filter(|c| c.opened && c.role == Role::Watcher)
            .map(|c| self.meter.lost(c.stream, &c.acct))
            .sum();
        let m = &self.meter;
        report.window_s = window_s;
        report.sent = sent;
        report.expected = expected;
        report.received = m.received;
        report.lost = lost;
        report.delivered = m.delivered;
        report.delivered_bytes = m.delivered_bytes;
        report.delivered_mb_s = m.delivered_bytes as f64 / window_s / 1e6;
        report.msgs_per_s = m.delivered as f64 / window_s;
        report.lat_p50_us = m.hist.percentile(50.0);
        report.lat_p99_us = m.hist.percentile(99.0);
        report.lat_max_us = (m.hist.total > 0).then_some(m.hist.max);
        report.read_p50_us = m.hist_read.percentile(50.0);
        report.read_p99_us = m.hist_read.percentile(99.0);
        report.server_cpu_s = end.cpu_s.zip(cpu0).map(|(b, a)| b - a);
        report.server_rss_kb = end.rss_kb;
        report.server_peak_rss_kb = end.peak_rss_kb;
        Ok(())
    }

    fn run_until(&mut self, deadline: Instant, events: &mut Events) -> Result<(), String> {
        while Instant::now() < deadline {
            self.tick(events, Some(deadline))?;
        }
        Ok(())
    }

    /// Connects and upgrades `tokens`, at most `CONNECT_WINDOW` at a time, with bounded retries.
    fn connect_group(&mut self, tokens: std::ops::Range<usize>, events: &mut Events) -> Result<(), String> {
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

    fn start_connect(&mut self, token: usize, now: Instant) {
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

    fn drop_socket(&mut self, token: usize) {
        if let Some(mut sock) = self.conns[token].sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        self.conns[token].tls = None;
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

    /// One turn of the loop: wait for events or the next deadline, then serve what is ready.
    fn tick(&mut self, events: &mut Events, deadline: Option<Instant>) -> Result<(), String> {
        let now = Instant::now();
        let mut wake = deadline;
        for &(at, _) in &self.retries {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if self.sending && self.args.rate > 0.0 {
            for p in &self.pubs {
                let c = &self.conns[p.token];
                if c.phase == Phase::Open && c.writable && p.pos == p.len {
                    let at = p.next_due_at(self.args.rate);
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
        }
        let timeout =
            if self.pending.is_empty() { wake.map(|w| w.saturating_duration_since(now)) } else { Some(Duration::ZERO) };
        if let Err(e) = self.poll.poll(events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(format!("poll: {e}"));
        }
        let now = Instant::now();
        for event in events.iter() {
            let token = event.token().0;
            let c = &mut self.conns[token];
            c.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            c.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
            self.service(token, now);
        }
        for token in std::mem::take(&mut self.pending) {
            self.conns[token].queued = false;
            self.service(token, now);
        }
        if !self.retries.is_empty() {
            let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|&(at, _)| at <= now);
            self.retries = later;
            for (_, token) in due {
                self.start_connect(token, now);
            }
        }
        if self.sending {
            for p in 0..self.pubs.len() {
                let token = self.pubs[p].token;
                if self.conns[token].phase == Phase::Open && self.conns[token].writable && self.pump(p, now) {
                    self.requeue(token);
                }
            }
        }
        match self.fatal.take() {
            Some(fatal) => Err(fatal),
            None => Ok(()),
        }
    }

    fn requeue(&mut self, token: usize) {
        if !self.conns[token].queued {
            self.conns[token].queued = true;
            self.pending.push(token);
        }
    }

    fn service(&mut self, token: usize, now: Instant) {
        match self.conns[token].phase {
            Phase::Connecting => self.on_connecting(token, now),
            Phase::Handshake => self.on_handshake(token, now),
            // A stalled watcher reads nothing; its readiness is kept for when it resumes.
            Phase::Open if self.conns[token].stalled => {}
            Phase::Open => self.on_open(token, now),
            Phase::Closing => self.on_closing(token),
            Phase::Queued | Phase::Done => {}
        }
    }

    fn on_connecting(&mut self, token: usize, now: Instant) {
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

    fn on_handshake(&mut self, token: usize, now: Instant) {
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

    fn on_open(&mut self, token: usize, now: Instant) {
        let mut more = false;
        if self.conns[token].readable {
            match self.read_open(token) {
                After::Fine => {}
                After::More => more = true,
                After::Lost(why) => return self.lost(token, why),
            }
        }
        if let Some(code) = self.conns[token].close_code.take() {
            return self.server_closed(token, code);
        }
        match self.conns[token].role {
            Role::Publisher(p) => more |= self.pump(p, now),
            Role::Watcher => {
                let c = &mut self.conns[token];
                if (!c.ctrl_out.is_empty() || c.tls.as_ref().is_some_and(|t| t.wants_write()))
                    && let Some(sock) = c.sock.as_mut()
                    && let Err(e) = write_some(sock, &mut c.tls, &mut c.ctrl_out)
                {
                    return self.lost(token, format!("write: {e}"));
                }
            }
        }
        if more {
            self.requeue(token);
        }
    }

    /// Reads and parses until the socket is drained or the budget is used.
    fn read_open(&mut self, token: usize) -> After {
        let c = &mut self.conns[token];
        // The socket is taken out while the rest of the connection is borrowed by `ingest`.
        let Some(mut sock) = c.sock.take() else { return After::Fine };
        let after = match c.tls.take() {
            None => read_into(&mut sock, c, &mut self.buf, &self.clock, &mut self.meter),
            Some(mut tls) => {
                let after = read_tls_into(&mut sock, &mut tls, c, &mut self.buf, &self.clock, &mut self.meter);
                c.tls = Some(tls);
                after
            }
        };
        c.sock = Some(sock);
        after
    }

    /// Writes a publisher's batch, pongs between batches, and new batches while sending is on.
    /// Returns true when its write budget ran out with more to write.
    fn pump(&mut self, p: usize, now: Instant) -> bool {
        let (rate, sending) = (self.args.rate, self.sending);
        let pb = &mut self.pubs[p];
        let c = &mut self.conns[pb.token];
        let Some(sock) = c.sock.as_mut() else { return false };
        if !c.writable || c.phase != Phase::Open {
            return false;
        }
        let mut written = 0;
        loop {
            if pb.pos == pb.len {
                // Control frames go between messages, never inside one.
                match write_some(sock, &mut c.tls, &mut c.ctrl_out) {
                    Ok(true) => {}
                    Ok(false) => {
                        c.writable = false;
                        return false;
                    }
                    Err(e) => {
                        let token = pb.token;
                        self.lost(token, format!("write: {e}"));
                        return false;
                    }
                }
                let n = if sending { pb.due(now, rate) } else { 0 };
                if n == 0 {
                    return false;
                }
                pb.stamp(n, self.clock.now_us());
            }
            match send(sock, &mut c.tls, &pb.batch[pb.pos..pb.len]) {
                Ok(n) => {
                    pb.pos += n;
                    written += n;
                    if written >= IO_BUDGET {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.writable = false;
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let token = pb.token;
                    self.lost(token, format!("write: {e}"));
                    return false;
                }
            }
        }
    }

    /// The connection ended without our asking: EOF, reset or a protocol error.
    fn lost(&mut self, token: usize, why: String) {
        self.soak_session_end(token, soak::End::Lost);
        self.drop_socket(token);
        let c = &mut self.conns[token];
        if c.phase == Phase::Open {
            self.closed_by_server += 1;
            self.problem(why);
        }
        self.conns[token].phase = Phase::Done;
    }

    /// The server sent a close frame: answer it (§5.5.1) and hang up.
    fn server_closed(&mut self, token: usize, code: Option<u16>) {
        self.soak_session_end(token, soak::End::Server(code));
        let c = &mut self.conns[token];
        if let Some(sock) = c.sock.as_mut() {
            let mut out = Vec::new();
            push_masked_frame(&mut out, OP_CLOSE, &code.map(u16::to_be_bytes).unwrap_or_default()[..]);
            let _ = write_some(sock, &mut c.tls, &mut out);
            if let Some(tls) = c.tls.as_mut() {
                tls.send_close_notify();
                let _ = tls::flush(sock, tls);
            }
            let _ = sock.shutdown(Shutdown::Write);
        }
        let was_open = c.phase == Phase::Open;
        self.drop_socket(token);
        self.conns[token].phase = Phase::Done;
        if was_open {
            self.closed_by_server += 1;
            self.problem(format!("close frame {}", code.map_or("without code".into(), |c| c.to_string())));
        }
    }

    fn on_closing(&mut self, token: usize) {
        let c = &mut self.conns[token];
        let Some(sock) = c.sock.as_mut() else { return };
        loop {
            match recv(sock, &mut c.tls, &mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.drop_socket(token);
        self.conns[token].phase = Phase::Done;
    }

    /// Ends every connection with a close frame and waits briefly for the server to hang up.
    fn close_all(&mut self, events: &mut Events) {
        self.sending = false;
        let mut out = Vec::new();
        push_masked_frame(&mut out, OP_CLOSE, &1000u16.to_be_bytes());
        let mut closing = 0;
        for token in 0..self.conns.len() {
            let mid_message = match self.conns[token].role {
                Role::Publisher(p) => self.pubs[p].pos != self.pubs[p].len,
                Role::Watcher => false,
            };
            self.conns[token].stalled = false;
            self.soak_session_end(token, soak::End::Left);
            let c = &mut self.conns[token];
            let Some(sock) = c.sock.as_mut() else { continue };
            let sent = c.phase == Phase::Open
                && !mid_message
                && matches!(write_some(sock, &mut c.tls, &mut out.clone()), Ok(true));
            if sent {
                if let Some(tls) = c.tls.as_mut() {
                    tls.send_close_notify();
                    let _ = tls::flush(sock, tls);
                }
                let _ = sock.shutdown(Shutdown::Write);
                c.phase = Phase::Closing;
                closing += 1;
            } else {
                self.drop_socket(token);
                self.conns[token].phase = Phase::Done;
            }
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while closing > 0 && Instant::now() < deadline {
            if self.tick(events, Some(deadline)).is_err() {
                break;
            }
            closing = self.conns.iter().filter(|c| c.phase == Phase::Closing).count();
        }
        for token in 0..self.conns.len() {
            self.conns[token].sock = None;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/// USER_HZ from the auxiliary vector (AT_CLKTCK); Linux reports 100 almost everywhere.
fn clock_ticks() -> f64 {
    const AT_CLKTCK: usize = 17;
    const W: usize = std::mem::size_of::<usize>();
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(2 * W)
        .map(|pair| {
            let key = usize::from_ne_bytes(pair[..W].try_into().expect("word"));
            let value = usize::from_ne_bytes(pair[W..].try_into().expect("word"));
            (key, value)
        })
        .find(|&(key, value)| key == AT_CLKTCK && value > 0)
        .map_or(100.0, |(_, value)| value as f64)
}

/// User + system CPU seconds of a process (`pid` may be "self").
fn proc_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn fd_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Default)]
struct Report {
    label: String,
    streams: usize,
    watchers: usize,
    size: usize,
    rate: f64,
    idle: bool,
    window_s: f64,
    sent: u64,
    expected: u64,
    received: u64,
    lost: u64,
    delivered: u64,
    delivered_bytes: u64,
    delivered_mb_s: f64,
    msgs_per_s: f64,
    lat_p50_us: Option<u64>,
    lat_p99_us: Option<u64>,
    lat_max_us: Option<u64>,
    connect_failures: u64,
    closed_by_server: u64,
    server_cpu_s: Option<f64>,
    server_rss_kb: Option<u64>,
    server_peak_rss_kb: Option<u64>,
    idle_rss_per_conn_bytes: Option<i64>,
    // For the table only.
    read_p50_us: Option<u64>,
    read_p99_us: Option<u64>,
    connected: usize,
    out_of_order: u64,
    own_cpu_s: Option<f64>,
    problems: BTreeMap<String, u64>,
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f64(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { "null".into() }
}

fn json_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

impl Report {
    fn new(args: &Args) -> Report {
        Report {
            label: args.label.clone(),
            streams: args.streams,
            watchers: args.watchers,
            // Idle runs send nothing: no message size or rate to report.
            size: if args.idle { 0 } else { args.size },
            rate: if args.idle { 0.0 } else { args.rate },
            idle: args.idle,
            ..Report::default()
        }
    }

    fn cpu_us_per_msg(&self) -> Option<f64> {
        self.server_cpu_s.filter(|_| self.delivered > 0).map(|cpu| cpu / self.delivered as f64 * 1e6)
    }

    fn json(&self) -> String {
        let fields = [
            ("label", json_string(&self.label)),
            ("streams", self.streams.to_string()),
            ("watchers", self.watchers.to_string()),
            ("size", self.size.to_string()),
            ("rate", json_f64(self.rate, 3)),
            ("duration_s", json_f64(self.window_s, 3)),
            ("sent", self.sent.to_string()),
            ("expected", self.expected.to_string()),
            ("received", self.received.to_string()),
            ("lost", self.lost.to_string()),
            ("delivered_bytes", self.delivered_bytes.to_string()),
            ("delivered_mb_s", json_f64(self.delivered_mb_s, 3)),
            ("msgs_per_s", json_f64(self.msgs_per_s, 1)),
            ("lat_p50_us", json_opt(self.lat_p50_us)),
            ("lat_p99_us", json_opt(self.lat_p99_us)),
            ("lat_max_us", json_opt(self.lat_max_us)),
            ("connect_failures", self.connect_failures.to_string()),
            ("closed_by_server", self.closed_by_server.to_string()),
            ("server_cpu_s", self.server_cpu_s.map_or("null".into(), |v| json_f64(v, 3))),
            ("server_rss_kb", json_opt(self.server_rss_kb)),
            ("server_peak_rss_kb", json_opt(self.server_peak_rss_kb)),
            ("cpu_us_per_msg", self.cpu_us_per_msg().map_or("null".into(), |v| json_f64(v, 4))),
            ("idle_rss_per_conn_bytes", json_opt(self.idle_rss_per_conn_bytes)),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn table(&self) -> String {
        use std::fmt::Write as _;
        let opt = |v: Option<u64>, unit: &str| v.map_or("-".into(), |v| format!("{v} {unit}"));
        let mut t = String::new();
        let label = if self.label.is_empty() { String::new() } else { format!(" [{}]", self.label) };
        let rate = if self.rate > 0.0 { format!("{}/s", self.rate) } else { "max".into() };
        let _ = writeln!(t, "relay-load{label}");
        let _ = writeln!(
            t,
            "  load        {} watchers ({} connected) on {} streams, {} B messages at {rate}, {:.2} s window",
            self.watchers, self.connected, self.streams, self.size, self.window_s
        );
        if !self.idle {
            let _ = writeln!(
                t,
                "  messages    sent {}  expected {}  received {}  lost {}{}",
                self.sent,
                self.expected,
                self.received,
                self.lost,
                if self.out_of_order > 0 { format!("  out of order {}", self.out_of_order) } else { String::new() }
            );
            let _ = writeln!(
                t,
                "  delivered   {:.1} MB/s  {:.0} msg/s  ({} messages, {} bytes)",
                self.delivered_mb_s, self.msgs_per_s, self.delivered, self.delivered_bytes
            );
            let _ = writeln!(
                t,
                "  latency     p50 {}  p99 {}  max {}  (to our read: p50 {}  p99 {})",
                opt(self.lat_p50_us, "us"),
                opt(self.lat_p99_us, "us"),
                opt(self.lat_max_us, "us"),
                opt(self.read_p50_us, "us"),
                opt(self.read_p99_us, "us")
            );
        }
        let _ =
            writeln!(t, "  failures    connect {}  closed by server {}", self.connect_failures, self.closed_by_server);
        for (why, n) in &self.problems {
            let _ = writeln!(t, "              {n} × {why}");
        }
        let cpu = self.server_cpu_s.map_or("-".into(), |v| format!("{v:.2} s"));
        let per_msg = self.cpu_us_per_msg().map_or(String::new(), |v| format!(" ({v:.3} us/msg)"));
        let _ = writeln!(
            t,
            "  server      cpu {cpu}{per_msg}  rss {}  peak {}",
            opt(self.server_rss_kb, "kB"),
            opt(self.server_peak_rss_kb, "kB")
        );
        if let Some(per_conn) = self.idle_rss_per_conn_bytes {
            let _ = writeln!(t, "  idle        {per_conn} bytes of server RSS per watcher");
        }
        if let Some(own) = self.own_cpu_s {
            let _ = writeln!(t, "  generator   cpu {own:.2} s (whole run)");
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_exact_below_64_and_within_a_thirty_second_above() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(25));
        assert_eq!(h.percentile(99.0), Some(50));
        assert_eq!(h.percentile(100.0), Some(50));
        assert_eq!(h.percentile(0.0), Some(1));

        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for p in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9] {
            let truth = (p / 100.0 * 100_000.0) as u64;
            let got = h.percentile(p).unwrap();
            assert!(got >= truth && got as f64 <= truth as f64 * (1.0 + 1.0 / 32.0), "p{p}: {got} vs {truth}");
        }
        assert_eq!(h.percentile(100.0), Some(100_000));
    }

    #[test]
    fn histogram_percentiles_of_a_skewed_distribution() {
        // 990 fast messages and 10 slow ones: p99 is still fast, p99.9 and max are slow.
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(40);
        }
        for _ in 0..10 {
            h.record(5_000);
        }
        assert_eq!(h.percentile(50.0), Some(40));
        assert_eq!(h.percentile(99.0), Some(40));
        let p999 = h.percentile(99.9).unwrap();
        assert!((5_000..=5_000 + 5_000 / 32).contains(&p999), "{p999}");
        assert_eq!(h.max, 5_000);
        assert_eq!(h.percentile(100.0), Some(5_000));
    }

    #[test]
    fn histogram_buckets_are_ordered_and_cover_every_value() {
        let mut last = 0;
        let values =
            (0..5000u64).chain((13..64).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 1])).chain([u64::MAX]);
        for v in values {
            let i = Histogram::bucket(v);
            assert!(i < BUCKETS);
            assert!(Histogram::upper(i) >= v, "{v} above its bucket {i}");
            assert!(i == 0 || Histogram::upper(i - 1) < v, "{v} belongs lower than {i}");
            if v < 5000 {
                assert!(i >= last);
                last = i;
            }
        }
        assert_eq!(Histogram::upper(BUCKETS - 1), u64::MAX);
    }

    /// Owned copies of the parser's events, for comparing runs.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Seen {
        Message(u8, Vec<u8>, u64),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn parse_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<Vec<Seen>, FrameError> {
        let mut parser = FrameParser::new();
        let mut seen = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([wire.len()].iter()) {
            parser.feed(&wire[from..to], |e| {
                seen.push(match e {
                    Event::Message { opcode, head, len } => Seen::Message(opcode, head.to_vec(), len),
                    Event::Ping(p) => Seen::Ping(p.to_vec()),
                    Event::Pong => Seen::Pong,
                    Event::Close(code) => Seen::Close(code),
                })
            })?;
            from = to;
        }
        Ok(seen)
    }

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let (h, used) = camrelay::ws::frame::header(b0 & 0x0f, payload.len());
        let mut f = h[..used].to_vec();
        f[0] = b0;
        f.extend_from_slice(payload);
        f
    }

    fn load_payload(size: usize, sent_us: u64, seq: u64) -> Vec<u8> {
        let mut p = vec![0xAB; size];
        p[0] = KIND_LOAD;
        p[1..9].copy_from_slice(&sent_us.to_be_bytes());
        p[9..17].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn frames_split_anywhere_parse_the_same() {
        let mut wire = Vec::new();
        wire.extend(server_frame(0x81, br#"{"event":"publisher","live":true}"#));
        wire.extend(server_frame(0x82, &load_payload(17, 1, 0)));
        wire.extend(server_frame(0x82, &load_payload(300, 2, 1))); // 16-bit length
        wire.extend(server_frame(0x82, &load_payload(70_000, 3, 2))); // 64-bit length
        wire.extend(server_frame(0x82, &[KIND_LOAD, 1, 2])); // shorter than a head
        wire.extend(server_frame(0x89, b"hi"));
        // A fragmented message with a ping between fragments; its head spans two frames.
        wire.extend(server_frame(0x02, &load_payload(40, 4, 3)[..10]));
        wire.extend(server_frame(0x8A, b""));
        wire.extend(server_frame(0x00, &load_payload(40, 4, 3)[10..]));
        wire.extend(server_frame(0x80, &[]));
        wire.extend(server_frame(0x82, &[]));
        wire.extend(server_frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));

        let whole = parse_in_pieces(&wire, &[]).unwrap();
        let head = |size, us, seq| load_payload(size, us, seq)[..HEAD_LEN].to_vec();
        let expected = vec![
            Seen::Message(OP_TEXT, br#"{"event":"publish"#.to_vec(), 33),
            Seen::Message(OP_BINARY, head(17, 1, 0), 17),
            Seen::Message(OP_BINARY, head(300, 2, 1), 300),
            Seen::Message(OP_BINARY, head(70_000, 3, 2), 70_000),
            Seen::Message(OP_BINARY, vec![KIND_LOAD, 1, 2], 3),
            Seen::Ping(b"hi".to_vec()),
            Seen::Pong,
            Seen::Message(OP_BINARY, head(40, 4, 3), 40),
            Seen::Message(OP_BINARY, vec![], 0),
            Seen::Close(Some(1000)),
        ];
        assert_eq!(whole, expected);
        // Every single cut point, a spread of double cuts, and byte by byte.
        for cut in 0..=wire.len() {
            assert_eq!(parse_in_pieces(&wire, &[cut]).unwrap(), expected, "cut at {cut}");
        }
        for a in (0..wire.len()).step_by(97) {
            for b in (a..wire.len()).step_by(61) {
                assert_eq!(parse_in_pieces(&wire, &[a, b]).unwrap(), expected, "cuts at {a}, {b}");
            }
        }
        let bytes: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(parse_in_pieces(&wire, &bytes).unwrap(), expected);
    }

    #[test]
    fn skipping_payload_past_the_head_gives_the_same_events() {
        let mut wire = Vec::new();
        for (i, size) in [17usize, 5000, 70_000, 100, 300_000].into_iter().enumerate() {
            wire.extend(server_frame(0x82, &load_payload(size, i as u64 * 7, i as u64)));
            wire.extend(server_frame(0x81, b"{}"));
        }
        let expected = parse_in_pieces(&wire, &[]).unwrap();
        // Like `read_into`: skip what may be skipped (at most `step` bytes at a time), otherwise
        // read `peek` bytes.
        for (step, peek) in [(1usize, 1usize), (1000, PEEK), (1 << 20, PEEK), (4096, 3)] {
            let mut parser = FrameParser::new();
            let mut seen = Vec::new();
            let mut on = |e: Event| {
                if let Event::Message { opcode, head, len } = e {
                    seen.push(Seen::Message(opcode, head.to_vec(), len));
                }
            };
            let (mut at, mut skipped) = (0, 0);
            while at < wire.len() {
                let skippable = parser.skippable() as usize;
                if skippable > 0 {
                    let n = skippable.min(step);
                    parser.skip(n as u64, &mut on);
                    (at, skipped) = (at + n, skipped + n);
                } else {
                    let n = peek.min(wire.len() - at);
                    parser.feed(&wire[at..at + n], &mut on).unwrap();
                    at += n;
                }
            }
            assert_eq!(seen, expected, "step {step}, peek {peek}");
            assert!(skipped > 300_000, "payload was read, not skipped");
        }
    }

    #[test]
    fn frames_that_break_the_rules_are_errors() {
        let err = |wire: &[u8]| parse_in_pieces(wire, &[1]).unwrap_err();
        assert_eq!(err(&[0x82, 0x81, 1, 2, 3, 4, 0]), FrameError::MaskedServerFrame);
        assert_eq!(err(&[0xC2, 0x00]), FrameError::ReservedBitsSet);
        assert_eq!(err(&[0x83, 0x00]), FrameError::UnknownOpcode(3));
        assert_eq!(err(&[0x80, 0x00]), FrameError::UnexpectedContinuation);
        assert_eq!(err(&[0x02, 0x00, 0x82, 0x00]), FrameError::ExpectedContinuation);
        assert_eq!(err(&[0x09, 0x00]), FrameError::BadControlFrame);
        assert_eq!(err(&[0x89, 126, 0, 126]), FrameError::BadControlFrame);
    }

    /// Unmasks a client frame the way the server does; returns (opcode, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "final");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        let mask = &frame[at..at + 4];
        let payload = frame[at + 4..at + 4 + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        (frame[0] & 0x0f, payload)
    }

    #[test]
    fn publisher_batches_carry_stamps_under_the_mask() {
        for size in [17, 100, 1000, 70_000] {
            let mut p = Publisher::new(0, 0, size);
            assert_eq!(p.due(p.start, 0.0), p.max_batch);
            let n = p.max_batch.min(3);
            p.stamp(n, 123_456);
            p.stamp(n, 987_654);
            assert_eq!(p.len, n * p.frame_len);
            for k in 0..n {
                let (opcode, payload) = unmask(&p.batch[k * p.frame_len..(k + 1) * p.frame_len]);
                assert_eq!(opcode, OP_BINARY);
                assert_eq!(payload.len(), size);
                assert_eq!(payload[0], KIND_LOAD);
                assert_eq!(u64::from_be_bytes(payload[1..9].try_into().unwrap()), 987_654);
                assert_eq!(u64::from_be_bytes(payload[9..17].try_into().unwrap()), (n + k) as u64);
                assert!(payload[17..].iter().enumerate().all(|(i, &b)| b == ((i + 17) % 251) as u8));
            }
        }
    }

    #[test]
    fn pacing_releases_messages_at_the_rate_and_catches_up() {
        let mut p = Publisher::new(0, 0, 100);
        let t = p.start;
        assert_eq!(p.due(t, 10.0), 1);
        p.stamp(1, 0);
        assert_eq!(p.due(t + Duration::from_millis(99), 10.0), 0);
        assert_eq!(p.next_due_at(10.0), t + Duration::from_millis(100));
        assert_eq!(p.due(p.next_due_at(10.0), 10.0), 1);
        assert_eq!(p.due(t + Duration::from_millis(450), 10.0), 4);
    }

    #[test]
    fn meter_counts_gaps_and_the_tail_only_inside_the_measured_range() {
        let mut m = Meter::new(1);
        let mut a = Acct::default();
        let head = |seq: u64| load_payload(17, 10, seq);
        // Warm-up: seq 0..3 received, 3 skipped; nothing counted.
        for seq in [0, 1, 2, 4] {
            m.record(0, &mut a, &head(seq), 17, Arrival { arrived_us: 50, read_us: 50 });
        }
        assert_eq!((m.received, a.gaps), (0, 0));
        m.m0[0] = 6;
        // 5 is before the range; 7 skips 6 (measured); 8, 9 arrive; 10..12 never do.
        for seq in [5, 7, 8, 9] {
            m.record(0, &mut a, &head(seq), 17, Arrival { arrived_us: 60, read_us: 75 });
        }
        m.record(0, &mut a, &head(8), 17, Arrival { arrived_us: 60, read_us: 75 });
        m.m1[0] = 12;
        assert_eq!((m.received, a.gaps, m.out_of_order), (3, 1, 1));
        assert_eq!(m.lost(0, &a), 1 + 2);
        assert_eq!(m.hist.percentile(50.0), Some(50));
        assert_eq!(m.hist_read.percentile(50.0), Some(65));
        assert_eq!(m.last_any_us, 75);
    }

    #[test]
    fn soak_publisher_sends_key_frames_every_n_and_deltas_between() {
        let mut p = Publisher::new(0, 0, 100);
        p.keyframe_every = 3;
        let n = p.max_batch.min(4);
        p.stamp(n, 1);
        for k in 0..n {
            let (_, payload) = unmask(&p.batch[k * p.frame_len..(k + 1) * p.frame_len]);
            assert_eq!(payload[0], if k % 3 == 0 { KIND_KEY } else { KIND_DELTA }, "message {k}");
            assert_eq!(u64::from_be_bytes(payload[9..17].try_into().unwrap()), k as u64);
        }
    }

    #[test]
    fn soak_meter_counts_gaps_only_from_the_first_live_message() {
        let mut m = Meter::new(1);
        m.soak = true;
        let mut a = Acct { opened_us: 1000, ..Acct::default() };
        let at = Arrival { arrived_us: 2000, read_us: 2000 };
        let msg = |sent_us: u64, seq: u64| load_payload(17, sent_us, seq);
        // The cached group (sent before the join, may start anywhere), then live messages.
        for (sent, seq) in [(100, 30), (200, 31), (300, 35), (1500, 36), (1600, 37), (1700, 40), (1800, 41)] {
            m.record(0, &mut a, &msg(sent, seq), 17, at);
        }
        assert_eq!((a.first_live, a.gaps, a.messages, m.delivered), (Some(36), 2, 7, 7));
        m.record(0, &mut a, &msg(1900, 39), 17, at);
        assert_eq!(m.out_of_order, 1);
    }

    #[test]
    fn flags_and_urls() {
        let parse = |s: &str| parse_args(s.split_whitespace().map(OsString::from));
        let Ok(Cli::Run(a)) = parse("--url ws://127.0.0.1:9/base/ --watchers 5 --streams 2 --size 17 --rate 0") else {
            panic!("valid flags refused")
        };
        assert_eq!((a.authority.as_str(), a.prefix.as_str(), a.watchers, a.streams), ("127.0.0.1:9", "/base", 5, 2));
        assert_eq!(a.rate, 0.0);
        assert!(matches!(parse("--help"), Ok(Cli::Help)));
        assert!(parse("--url ws://127.0.0.1:9 --size 16").is_err());
        assert!(parse("--url http://127.0.0.1:9").is_err());
        assert!(parse("--url wss://127.0.0.1:9").is_err(), "wss:// needs --ca or --insecure");
        assert!(parse("--url ws://127.0.0.1:9 --insecure").is_err());
        let Ok(Cli::Run(a)) = parse("--url wss://localhost/x --insecure") else { panic!("wss refused") };
        assert_eq!((a.authority.as_str(), a.prefix.as_str(), a.tls.is_some()), ("localhost:443", "/x", true));
        let Ok(Cli::Run(a)) = parse("--url ws://127.0.0.1:9 --soak") else { panic!("soak refused") };
        assert_eq!((a.watchers, a.size, a.rate, a.warmup, a.soak.is_some()), (200, 51200, 30.0, 10.0, true));
        assert!(parse("--url ws://127.0.0.1:9 --soak --streams 2").is_err());
        assert!(parse("--watchers 3").is_err());
        assert!(parse("--url ws://127.0.0.1:9 --bogus").is_err());
        assert_eq!(parse_url("ws://localhost").unwrap(), (false, "localhost:80".into(), String::new()));
    }

    #[test]
    fn json_line_has_the_contract_keys() {
        let mut r = Report { label: "a \"b\"".into(), delivered: 4, server_cpu_s: Some(0.002), ..Report::default() };
        r.lat_p50_us = Some(12);
        let line = r.json();
        assert!(line.starts_with(r#"{"label":"a \"b\"","streams":0,"#), "{line}");
        assert!(line.contains(r#""lat_p50_us":12,"lat_p99_us":null"#));
        assert!(line.contains(r#""cpu_us_per_msg":500.0000,"idle_rss_per_conn_bytes":null}"#), "{line}");
        let keys = [
            "label",
            "streams",
            "watchers",
            "size",
            "rate",
            "duration_s",
            "sent",
            "expected",
            "received",
            "lost",
            "delivered_bytes",
            "delivered_mb_s",
            "msgs_per_s",
            "lat_p50_us",
            "lat_p99_us",
            "lat_max_us",
            "connect_failures",
            "closed_by_server",
            "server_cpu_s",
            "server_rss_kb",
            "server_peak_rss_kb",
            "cpu_us_per_msg",
            "idle_rss_per_conn_bytes",
        ];
        assert_eq!(line.matches("\":").count(), keys.len());
        for k in keys {
            assert!(line.contains(&format!("\"{k}\":")), "{k}");
        }
    }

    #[test]
    fn timestamps_are_found_among_control_messages() {
        // Another SOL_SOCKET message first (24 bytes: a header and 8 of data), then SCM_TIMESTAMPNS.
        let control = [24, 1 | (29 << 32), 7, 32, 1 | (35 << 32), 1_700_000_000, 250, 0];
        assert_eq!(sys::timestamp(&control, 56), Some(1_700_000_000_000_000_250));
        assert_eq!(sys::timestamp(&control, 48), None, "cut short");
        assert_eq!(sys::timestamp(&[0; 8], 64), None);
    }

    /// A connected loopback pair: (mio side, std side).
    fn socket_pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        (TcpStream::from_std(client), server)
    }

    /// Calls `receive` until it returns bytes (the data may take a moment on loopback).
    fn receive_some(sock: &mut TcpStream, buf: &mut [u8], discard: bool) -> (usize, Option<i128>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sys::receive(sock, buf, discard) {
                Ok(got) => return got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("receive: {e}"),
            }
        }
    }

    #[test]
    fn receive_reads_discards_and_stamps_on_a_real_socket() {
        let (mut sock, mut peer) = socket_pair();
        let mut buf = vec![0; 65536];
        if sys::enable_rx_timestamps(&sock) {
            // The kernel starts stamping packets shortly after the first socket asks for it.
            let deadline = Instant::now() + Duration::from_secs(5);
            let stamp = loop {
                peer.write_all(b"x").unwrap();
                let (n, stamp) = receive_some(&mut sock, &mut buf, false);
                assert_eq!(&buf[..n], b"x");
                if let Some(stamp) = stamp {
                    break stamp;
                }
                assert!(Instant::now() < deadline, "no receive timestamp");
                std::thread::sleep(Duration::from_millis(5));
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
            assert!((0..5_000_000_000).contains(&(now - stamp)), "stamp {stamp} vs now {now}");
        }
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        peer.write_all(&data).unwrap();
        let (n, _) = receive_some(&mut sock, &mut buf[..10], false);
        assert_eq!(&buf[..n], &data[..n]);
        // Discard up to byte 50 000 (in pieces, as they come); the next byte read is the one after.
        let mut skipped = n;
        while skipped < 50_000 {
            skipped += receive_some(&mut sock, &mut buf[..50_000 - skipped], true).0;
        }
        let (n, _) = receive_some(&mut sock, &mut buf[..1], false);
        assert_eq!((n, buf[0]), (1, data[50_000]));
    }
}
