//! The stream hub: who publishes and who watches each stream, the late-join cache, the
//! fan-out of every published message, and the slow-watcher policy.
//!
//! The hub never touches sockets. It talks to connections through `Clients`, so the policy
//! can be tested without a reactor.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::chunk::Chunk;
use crate::ws::frame::{self, OP_TEXT};

pub mod policy;
use policy::{Backlog, Policy};

/// Media message kinds: byte 0 of every binary message a publisher sends.
pub const KIND_INIT: u8 = 1;
pub const KIND_KEY: u8 = 2;
pub const KIND_DELTA: u8 = 3;

/// Publisher events are rate-limited: watcher counts at most every 250 ms, key frame
/// requests at most once a second.
const COUNT_EVENT_INTERVAL: Duration = Duration::from_millis(250);
const KEYFRAME_EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// Past this backlog a publisher is sent no events (it uploads; it need not read promptly).
const EVENT_BACKLOG_LIMIT: usize = 64 * 1024;

/// What the hub needs from the connections it relays to.
pub trait Clients {
    /// Queues a chunk on a connection and schedules its flush.
    fn send(&mut self, token: usize, chunk: &Rc<Chunk>, now: Instant);
    /// How far behind a connection's write queue is.
    fn backlog(&self, token: usize, now: Instant) -> Backlog;
    /// Closes a connection with a WebSocket close code (the caller defers the work).
    fn close(&mut self, token: usize, code: u16, reason: &'static str);
    /// Lets a publisher whose reading was paused read again.
    fn resume_reading(&mut self, token: usize);
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub messages_dropped: u64,
    pub watchers_closed_slow: u64,
    /// Times a publisher stopped being read because every watcher was behind.
    pub publisher_pauses: u64,
}

struct Watcher {
    token: usize,
    /// Video is skipped until the next key frame that fits.
    waiting_for_key: bool,
    /// When the watcher went over its bound, if it is over now.
    over_since: Option<Instant>,
}

#[derive(Default)]
struct Stream {
    publisher: Option<usize>,
    live_since_ms: u64,
    messages_in: u64,
    bytes_in: u64,
    watchers: Vec<Watcher>,
    /// The late-join cache: the latest init, then the latest key frame and the deltas after it.
    init: Option<Rc<Chunk>>,
    group: Vec<Rc<Chunk>>,
    group_bytes: usize,
    /// Every watcher was over its bound, so the publisher is not read (TCP pushes back).
    publisher_paused: bool,
    count_sent: usize,
    count_sent_at: Option<Instant>,
    keyframe_wanted: bool,
    keyframe_sent_at: Option<Instant>,
}

impl Stream {
    fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.watchers.is_empty()
    }

    fn clear_cache(&mut self) {
        self.init = None;
        self.group.clear();
        self.group_bytes = 0;
    }

    fn cache(&mut self, kind: u8, chunk: &Rc<Chunk>, bound: usize) {
        match kind {
            KIND_INIT => self.init = Some(chunk.clone()),
            KIND_KEY => {
                self.group.clear();
                self.group_bytes = 0;
                self.push_group(chunk, bound);
            }
            // An empty group after a key frame means it outgrew its bound: nothing is cached
            // until the next key frame.
            KIND_DELTA if !self.group.is_empty() => self.push_group(chunk, bound),
            _ => {}
        }
    }

    fn push_group(&mut self, chunk: &Rc<Chunk>, bound: usize) {
        if self.group_bytes + chunk.len() > bound {
            self.group.clear();
            self.group_bytes = 0;
        } else {
            self.group_bytes += chunk.len();
            self.group.push(chunk.clone());
        }
    }
}

/// A snapshot of one live stream, for `/api/streams`.
pub struct StreamInfo {
    pub name: String,
    pub watchers: usize,
    pub live_since_ms: u64,
    pub bytes_in: u64,
    pub messages_in: u64,
}

pub struct Hub {
    streams: HashMap<String, Stream>,
    policy: Policy,
    pub stats: Stats,
    live_true: Rc<Chunk>,
    live_false: Rc<Chunk>,
    keyframe: Rc<Chunk>,
}

impl Hub {
    pub fn new(policy: Policy) -> Hub {
        let text = |s: &str| frame::encode(OP_TEXT, s.as_bytes());
        Hub {
            streams: HashMap::new(),
            policy,
            stats: Stats::default(),
            live_true: text(r#"{"event":"publisher","live":true}"#),
            live_false: text(r#"{"event":"publisher","live":false}"#),
            keyframe: text(r#"{"event":"keyframe"}"#),
        }
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn is_live(&self, name: &str) -> bool {
        self.streams.get(name).is_some_and(|s| s.publisher.is_some())
    }

    /// Live streams, sorted by name.
    pub fn live_streams(&self) -> Vec<StreamInfo> {
        let mut list: Vec<StreamInfo> = self
            .streams
            .iter()
            .filter(|(_, s)| s.publisher.is_some())
            .map(|(name, s)| StreamInfo {
                name: name.clone(),
                watchers: s.watchers.len(),
                live_since_ms: s.live_since_ms,
                bytes_in: s.bytes_in,
                messages_in: s.messages_in,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Makes `token` the publisher of `name`; `false` if the stream already has one.
    pub fn add_publisher(&mut self, name: &str, token: usize, now: Instant, clients: &mut impl Clients) -> bool {
        let s = self.streams.entry(name.to_owned()).or_default();
        if s.publisher.is_some() {
            return false;
        }
        s.publisher = Some(token);
        s.live_since_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        s.messages_in = 0;
        s.bytes_in = 0;
        s.clear_cache();
        let hello = format!(r#"{{"event":"stream","name":"{name}"}}"#);
        clients.send(token, &frame::encode(OP_TEXT, hello.as_bytes()), now);
        s.count_sent = 0;
        s.count_sent_at = None;
        for w in &s.watchers {
            clients.send(w.token, &self.live_true, now);
        }
        if !s.watchers.is_empty() {
            s.keyframe_wanted = true;
        }
        Self::send_publisher_events(s, &self.keyframe, now, clients);
        true
    }

    pub fn remove_publisher(&mut self, name: &str, token: usize, now: Instant, clients: &mut impl Clients) {
        let Some(s) = self.streams.get_mut(name) else { return };
        if s.publisher != Some(token) {
            return;
        }
        s.publisher = None;
        s.publisher_paused = false;
        s.keyframe_wanted = false;
        s.clear_cache();
        for w in &s.watchers {
            clients.send(w.token, &self.live_false, now);
        }
        self.forget_if_unused(name);
    }

    /// Adds a watcher and sends it the publisher state, then the cached init and group.
    pub fn add_watcher(&mut self, name: &str, token: usize, now: Instant, clients: &mut impl Clients) {
        let s = self.streams.entry(name.to_owned()).or_default();
        let live = s.publisher.is_some();
        clients.send(token, if live { &self.live_true } else { &self.live_false }, now);
        if live {
            for chunk in s.init.iter().chain(&s.group) {
                clients.send(token, chunk, now);
            }
            s.keyframe_wanted = true;
        }
        // Every message is relayed to a watcher that keeps up, deltas before its first key frame
        // included (the contract is byte-identical relay; the cast page skips them itself).
        s.watchers.push(Watcher { token, waiting_for_key: false, over_since: None });
        Self::send_publisher_events(s, &self.keyframe, now, clients);
    }

    pub fn remove_watcher(&mut self, name: &str, token: usize, now: Instant, clients: &mut impl Clients) {
        let Some(s) = self.streams.get_mut(name) else { return };
        s.watchers.retain(|w| w.token != token);
        Self::resume_if_drained(s, now, &self.policy, clients);
        Self::send_publisher_events(s, &self.keyframe, now, clients);
        self.forget_if_unused(name);
    }

    /// Relays one publisher message (framed once in `chunk`) to every watcher, applying the
    /// slow-watcher policy. Returns `false` when the publisher should stop being read.
    pub fn publish(
        &mut self,
        name: &str,
        kind: u8,
        payload_len: usize,
        chunk: Rc<Chunk>,
        now: Instant,
        clients: &mut impl Clients,
    ) -> bool {
        let Some(s) = self.streams.get_mut(name) else { return true };
        s.messages_in += 1;
        s.bytes_in += payload_len as u64;
        self.stats.messages_in += 1;
        self.stats.bytes_in += payload_len as u64;
        s.cache(kind, &chunk, self.policy.queue_bytes);
        let mut all_behind = !s.watchers.is_empty();
        for w in &mut s.watchers {
            let backlog = clients.backlog(w.token, now);
            let over = self.policy.is_over(backlog);
            let deliver = match kind {
                KIND_KEY => {
                    w.waiting_for_key = over;
                    !over
                }
                KIND_DELTA => {
                    w.waiting_for_key |= over;
                    !w.waiting_for_key
                }
                // Init, audio and anything else: small and precious, cut only at twice the bound.
                _ => backlog.bytes <= 2 * self.policy.queue_bytes,
            };
            if deliver {
                clients.send(w.token, &chunk, now);
                self.stats.messages_out += 1;
                self.stats.bytes_out += chunk.len() as u64;
            } else {
                self.stats.messages_dropped += 1;
            }
            if w.waiting_for_key && (kind == KIND_KEY || kind == KIND_DELTA) {
                s.keyframe_wanted = true;
            }
            if over {
                w.over_since.get_or_insert(now);
            } else {
                w.over_since = None;
            }
            all_behind &= self.policy.is_behind(backlog);
        }
        Self::send_publisher_events(s, &self.keyframe, now, clients);
        if all_behind && !s.publisher_paused {
            log::debug!("stream {name}: every watcher is behind, pausing the publisher");
            self.stats.publisher_pauses += 1;
            s.publisher_paused = true;
        }
        !s.publisher_paused
    }

    /// Called after a watcher's queue drained a little: a paused publisher may go on.
    pub fn watcher_drained(&mut self, name: &str, now: Instant, clients: &mut impl Clients) {
        if let Some(s) = self.streams.get_mut(name) {
            Self::resume_if_drained(s, now, &self.policy, clients);
        }
    }

    /// Periodic work: rate-limited events, closing watchers that stayed too slow, resuming.
    pub fn tick(&mut self, now: Instant, clients: &mut impl Clients) {
        for s in self.streams.values_mut() {
            for w in &mut s.watchers {
                if self.policy.is_over(clients.backlog(w.token, now)) {
                    let since = *w.over_since.get_or_insert(now);
                    if now.duration_since(since) >= self.policy.slow_close_after {
                        // Report once: the close is deferred, so skip it on later ticks.
                        w.over_since = Some(now + Duration::from_secs(3600));
                        self.stats.watchers_closed_slow += 1;
                        clients.close(w.token, 1008, "too slow");
                    }
                } else {
                    w.over_since = None;
                }
            }
            Self::resume_if_drained(s, now, &self.policy, clients);
            Self::send_publisher_events(s, &self.keyframe, now, clients);
        }
    }

    fn resume_if_drained(s: &mut Stream, now: Instant, policy: &Policy, clients: &mut impl Clients) {
        if !s.publisher_paused {
            return;
        }
        let any_ok =
            s.watchers.is_empty() || s.watchers.iter().any(|w| !policy.is_behind(clients.backlog(w.token, now)));
        if any_ok {
            s.publisher_paused = false;
            if let Some(p) = s.publisher {
                clients.resume_reading(p);
            }
        }
    }

    /// Sends due watcher-count and key-frame events to the publisher, within their rates.
    fn send_publisher_events(s: &mut Stream, keyframe: &Rc<Chunk>, now: Instant, clients: &mut impl Clients) {
        let Some(publisher) = s.publisher else { return };
        // A publisher that does not read its events gets no more: they stay due until it does.
        if clients.backlog(publisher, now).bytes > EVENT_BACKLOG_LIMIT {
            return;
        }
        let due = |last: Option<Instant>, every| last.is_none_or(|t| now.duration_since(t) >= every);
        let count = s.watchers.len();
        if count != s.count_sent && due(s.count_sent_at, COUNT_EVENT_INTERVAL) {
            let event = format!(r#"{{"event":"watchers","count":{count}}}"#);
            clients.send(publisher, &frame::encode(OP_TEXT, event.as_bytes()), now);
            s.count_sent = count;
            s.count_sent_at = Some(now);
        }
        if s.keyframe_wanted && due(s.keyframe_sent_at, KEYFRAME_EVENT_INTERVAL) {
            clients.send(publisher, keyframe, now);
            s.keyframe_wanted = false;
            s.keyframe_sent_at = Some(now);
        }
    }

    fn forget_if_unused(&mut self, name: &str) {
        if self.streams.get(name).is_some_and(Stream::is_unused) {
            self.streams.remove(name);
        }
    }
}

#[cfg(test)]
mod tests;
