//! The command line: flags, their defaults and checks, and the URL taken apart for the run.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use crate::payload::HEAD_LEN;
use crate::{soak, tls};

pub const HELP: &str = "\
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
  --server-pid PID   read the server's CPU time (its CPU clock, to the ns) and RSS
                     (/proc/PID/status)
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

#[derive(Debug, Clone)]
pub struct Args {
    pub url: String,
    /// `host:port` for the Host header.
    pub authority: String,
    pub addr: SocketAddr,
    /// Path in front of `/ws/...` (the URL's path without its trailing slash).
    pub prefix: String,
    pub streams: usize,
    pub watchers: usize,
    pub size: usize,
    pub rate: f64,
    pub duration: f64,
    pub warmup: f64,
    pub idle: bool,
    pub server_pid: Option<u32>,
    pub label: String,
    pub json_only: bool,
    /// `wss://`: the client configuration and the name to verify.
    pub tls: Option<TlsTarget>,
    pub soak: Option<soak::SoakArgs>,
}

#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsTarget({:?})", self.name)
    }
}

#[derive(Debug)]
pub enum Cli {
    Run(Box<Args>),
    Help,
}

pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
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
    // Soak mode has its own defaults: the 30 × 50 KB to 200 watchers, 10 s of warm-up.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
