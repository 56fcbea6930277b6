//! HTTP requests on a connection: parsing what arrived, answering in order, upgrading.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Server;
use super::connection::{Phase, Role};
use super::transport::Transport;
use crate::chunk::Chunk;
use crate::http::request::{self, Request};
use crate::http::response::Response;
use crate::http::router::{self, Route};
use crate::http::static_files;
use crate::ws::handshake;
use crate::ws::receiver::Receiver;

/// A body on a GET is allowed but pointless; past this it is refused rather than skipped.
const MAX_SKIPPED_BODY: u64 = 64 * 1024;

impl Server {
    /// Answers every complete request in the connection's input, in order.
    pub(super) fn process_http(&mut self, token: usize, now: Instant) {
        loop {
            let limit = self.own_output_limit();
            let Some(conn) = self.conns.get_mut(token) else { return };
            let Phase::Http { input, skip_body } = &mut conn.phase else { return };
            let skip = (*skip_body).min(input.len() as u64) as usize;
            input.drain(..skip);
            *skip_body -= skip as u64;
            if *skip_body > 0 || input.is_empty() {
                return;
            }
            // Pipelined requests wait while the client is not reading the answers.
            if conn.out.cost() > limit {
                conn.read_paused = true;
                return;
            }
            match request::parse(input) {
                Ok(None) => return,
                Err(e) => {
                    log::info!("{}: bad request head ({e:?}), answering {}", conn.peer, e.status());
                    self.respond_and_close(token, Response::error(e.status()), now);
                    return;
                }
                Ok(Some((consumed, req))) => {
                    input.drain(..consumed);
                    // Between requests a keep-alive connection may idle; a pipelined head
                    // already under way must finish in time.
                    let wait =
                        if input.is_empty() { self.config.idle_timeout_ms } else { self.config.request_timeout_ms };
                    conn.deadline = Some(now + Duration::from_millis(wait));
                    if !self.handle_request(token, req, now) {
                        return;
                    }
                }
            }
        }
    }

    /// Answers one request; `false` when the connection left HTTP (closing or upgraded).
    fn handle_request(&mut self, token: usize, req: Request, now: Instant) -> bool {
        let route = router::route(req.path(), self.config.echo_endpoint);
        let conn = &self.conns[token];
        log::debug!("{}: {} {}", conn.peer, req.method, req.target);
        let head_only = req.method == "HEAD";
        if req.method != "GET" && !head_only {
            // Bodies of other methods are never read: answer and close.
            let response = Response::error(405).header("Allow", "GET, HEAD");
            self.respond_and_close(token, response, now);
            return false;
        }
        // `::ffff:127.0.0.1` on a dual-stack socket is loopback too.
        let from_loopback = conn.peer.ip().to_canonical().is_loopback();
        if conn.redirect_only && !(route.is_websocket() && from_loopback) {
            return self.redirect_to_https(token, &req, route, now);
        }
        if route.is_websocket() {
            return self.upgrade(token, &req, route, now);
        }
        match req.body_length() {
            Err(_) => {
                self.respond_and_close(token, Response::error(400), now);
                return false;
            }
            Ok(n) if n > MAX_SKIPPED_BODY => {
                self.respond_and_close(token, Response::error(413), now);
                return false;
            }
            Ok(n) => {
                if let Phase::Http { skip_body, .. } = &mut self.conns[token].phase {
                    *skip_body = n;
                }
            }
        }
        let secure = matches!(self.conns[token].socket, Transport::Tls(_));
        let response = self.answer(&req, route, secure);
        self.respond(token, response, head_only, req.keep_alive(), now)
    }

    /// The plain-HTTP port beside HTTPS: pages move to HTTPS; a WebSocket from another machine
    /// would carry camera and microphone in clear, so it is refused.
    fn redirect_to_https(&mut self, token: usize, req: &Request, route: Route<'_>, now: Instant) -> bool {
        if route.is_websocket() {
            log::info!("{}: plain-HTTP websocket from another machine refused (403)", self.conns[token].peer);
            self.respond_and_close(token, Response::error(403), now);
            return false;
        }
        let location = format!("https://{}{}", self.public_address, req.target);
        let response = Response::text(308, "use HTTPS").header("Location", &location);
        self.respond(token, response, req.method == "HEAD", req.keep_alive(), now)
    }

    /// The response to a plain (non-upgrade) GET or HEAD.
    fn answer(&self, req: &Request, route: Route<'_>, secure: bool) -> Response {
        match route {
            // Through `resolve` like any file, so a page that is a symlink out of the root is not served.
            Route::Page(file) => match static_files::resolve(&self.root, &format!("/{file}")) {
                Ok(path) => static_files::serve(&path, req.header("if-none-match")),
                Err(e) => Response::error(e.status()),
            },
            Route::File(path) => match static_files::resolve(&self.root, path) {
                Ok(file) => static_files::serve(&file, req.header("if-none-match")),
                Err(e) => Response::error(e.status()),
            },
            Route::Healthz => Response::text(200, "ok"),
            Route::Metrics => {
                let body = self.metrics.render(&self.gauges(), &self.hub.stats);
                Response::new(200, "text/plain; version=0.0.4; charset=utf-8", body.into_bytes())
            }
            Route::ApiStreams => Response::json(self.streams_json()),
            Route::ApiInfo => Response::json(format!(
                r#"{{"public_address":{},"version":"{}","tls":{}}}"#,
                json_string(&self.public_address),
                env!("CARGO_PKG_VERSION"),
                self.tls.is_some()
            )),
            Route::ApiPublish(name) => {
                let status = self.publish_refusal(req, name, secure).unwrap_or(200);
                let text = if status == 200 { "ok" } else { crate::http::response::reason(status) };
                Response::new(status, "application/json", format!(r#"{{"status":{status},"message":"{text}"}}"#).into())
                    .header("Cache-Control", "no-store")
            }
            // The pages read /api/publish answers as JSON, refusals included.
            Route::BadName if req.path().starts_with("/api/publish/") => {
                Response::new(400, "application/json", br#"{"status":400,"message":"Bad Request"}"#.to_vec())
                    .header("Cache-Control", "no-store")
            }
            Route::BadName => Response::error(400),
            Route::NotFound | Route::WsPublish(_) | Route::WsWatch(_) | Route::WsEcho => Response::error(404),
        }
    }

    fn streams_json(&self) -> String {
        let items: Vec<String> = self
            .hub
            .live_streams()
            .iter()
            .map(|s| {
                format!(
                    r#"{{"name":"{}","watchers":{},"live_since_ms":{},"bytes_in":{},"messages_in":{}}}"#,
                    s.name, s.watchers, s.live_since_ms, s.bytes_in, s.messages_in
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    }

    /// Why publishing `name` would be refused (403 or 409), checked the same way for
    /// `/api/publish/{name}` and for the upgrade itself.
    fn publish_refusal(&self, req: &Request, name: &str, secure: bool) -> Option<u16> {
        if !self.origin_allowed(req, secure) {
            return Some(403);
        }
        if !self.config.publish_key.is_empty() {
            let given = req.query_param("key").and_then(|k| static_files::percent_decode(k).ok()).unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), self.config.publish_key.as_bytes()) {
                return Some(403);
            }
        }
        if self.hub.is_live(name) {
            return Some(409);
        }
        None
    }

    /// With `allowed_origins` set, a browser page from elsewhere may not connect. Clients
    /// that send no `Origin` are not browsers, so cross-site rules do not apply to them.
    fn origin_allowed(&self, req: &Request, secure: bool) -> bool {
        let allowed = &self.config.allowed_origins;
        allowed.is_empty() || browser_origin(req, secure).is_none_or(|o| allowed.contains(&o))
    }

    /// The WebSocket opening handshake and the switch to the `WebSocket` phase.
    fn upgrade(&mut self, token: usize, req: &Request, route: Route<'_>, now: Instant) -> bool {
        let accept = match handshake::validate(req) {
            Ok(accept) => accept,
            Err(e) => {
                log::info!("{}: bad websocket handshake ({e:?})", self.conns[token].peer);
                let mut response = Response::error(e.status());
                if e.status() == 426 {
                    response = response.header("Sec-WebSocket-Version", "13");
                }
                self.respond_and_close(token, response, now);
                return false;
            }
        };
        let secure = matches!(self.conns[token].socket, Transport::Tls(_));
        let role = match route {
            Route::WsPublish(name) => {
                let name: Rc<str> = match name {
                    Some(n) => n.into(),
                    None => self.unused_name().into(),
                };
                if let Some(status) = self.publish_refusal(req, &name, secure) {
                    log::info!("{}: publishing {name} refused ({status})", self.conns[token].peer);
                    self.respond_and_close(token, Response::error(status), now);
                    return false;
                }
                Role::Publisher(name)
            }
            _ if !self.origin_allowed(req, secure) => {
                log::info!("{}: origin {:?} not allowed", self.conns[token].peer, req.header("origin"));
                self.respond_and_close(token, Response::error(403), now);
                return false;
            }
            Route::WsWatch(name) => Role::Watcher(name.into()),
            _ => Role::Echo,
        };
        *self.metrics.http_responses.entry(101).or_default() += 1;
        let conn = &mut self.conns[token];
        conn.send(&Chunk::new(handshake::switching_protocols(&accept)), now);
        // Whatever followed the handshake in the same read is already WebSocket data.
        let leftover = match &mut conn.phase {
            Phase::Http { input, .. } => std::mem::take(input),
            _ => Vec::new(),
        };
        log::info!("{}: {} {}", conn.peer, role.kind(), req.path());
        conn.deadline = None;
        conn.last_input = now;
        let receiver = Receiver::new(self.config.max_message_bytes);
        let hub_role = match &role {
            Role::Publisher(name) => Some((name.clone(), true)),
            Role::Watcher(name) => Some((name.clone(), false)),
            Role::Echo => None,
        };
        conn.phase = Phase::WebSocket { role, receiver };
        self.schedule_flush(token);
        if let Some((name, is_publisher)) = hub_role {
            let (hub, mut clients) = self.parts();
            if is_publisher {
                hub.add_publisher(&name, token, now, &mut clients);
            } else {
                hub.add_watcher(&name, token, now, &mut clients);
            }
        }
        if !leftover.is_empty() {
            self.process_websocket(token, &leftover, now);
        }
        false
    }

    /// A random stream name for `/ws/publish`, not in use.
    fn unused_name(&self) -> String {
        loop {
            let name = random_name();
            if !self.hub.is_live(&name) {
                return name;
            }
        }
    }

    /// Queues a response; `false` when the connection is now closing.
    pub(super) fn respond(
        &mut self,
        token: usize,
        response: Response,
        head_only: bool,
        keep_alive: bool,
        now: Instant,
    ) -> bool {
        *self.metrics.http_responses.entry(response.status).or_default() += 1;
        let keep_alive = keep_alive && self.shutdown_deadline.is_none();
        let Some(conn) = self.conns.get_mut(token) else { return false };
        conn.send(&Chunk::new(response.into_bytes(head_only, keep_alive)), now);
        self.schedule_flush(token);
        if !keep_alive {
            self.enter_closing(token, now);
        }
        keep_alive
    }

    pub(super) fn respond_and_close(&mut self, token: usize, response: Response, now: Instant) {
        self.respond(token, response, false, false, now);
    }
}

/// Compares secrets without revealing where they differ through timing.
/// The origin of the page that sent `req`, as its WebSocket upgrade would carry it. A
/// same-origin `fetch` GET (the capture page asking `/api/publish`) sends no `Origin`, but
/// browsers mark it `Sec-Fetch-Site: same-origin`: the page's origin is then this server as the
/// page addressed it in `Host`. `None` for clients that are not browsers.
fn browser_origin(req: &Request, secure: bool) -> Option<String> {
    if let Some(origin) = req.header("origin") {
        return Some(origin.trim().to_owned());
    }
    if req.header("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("same-origin")) {
        let scheme = if secure { "https" } else { "http" };
        return req.header("host").map(|host| format!("{scheme}://{}", host.trim()));
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// 10 random characters from `[a-z0-9]`, seeded by the standard library's per-process keys.
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let mut bits = hasher.finish();
    (0..10)
        .map(|_| {
            let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(bits % 36) as usize];
            bits /= 36;
            c as char
        })
        .collect()
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_names_are_valid_and_differ() {
        let (a, b) = (random_name(), random_name());
        assert!(router::is_valid_name(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
