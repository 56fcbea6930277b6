//! Messages on an open WebSocket: relaying what publishers send, echoing, control frames.

use std::time::Instant;

use super::Server;
use super::connection::{Phase, Role};
use crate::ws::frame::{self, MAX_HEADER, OP_BINARY, OP_PONG};
use crate::ws::receiver::Incoming;

impl Server {
    /// Decodes `input` and acts on every message in it.
    pub(super) fn process_websocket(&mut self, token: usize, mut input: &[u8], now: Instant) {
        while !input.is_empty() {
            let Some(conn) = self.conns.get_mut(token) else { return };
            let Phase::WebSocket { receiver, .. } = &mut conn.phase else { return };
            match receiver.next(&mut input) {
                Ok(None) => return,
                Ok(Some(message)) => self.on_message(token, message, now),
                Err(e) => {
                    log::warn!("{}: websocket protocol error: {e}, closing with {}", conn.peer, e.close_code());
                    // The decoder cannot resync after an error: send the close and stop reading frames.
                    self.start_close(token, e.close_code(), "protocol error", now);
                    self.enter_closing(token, now);
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, token: usize, message: Incoming, now: Instant) {
        let limit = self.own_output_limit();
        let Some(conn) = self.conns.get_mut(token) else { return };
        let Phase::WebSocket { role, .. } = &conn.phase else { return };
        match message {
            Incoming::Ping(payload) => {
                // A peer that pings without reading the pongs gets no more of them.
                if conn.out.cost() <= limit {
                    conn.send(&frame::encode(OP_PONG, &payload), now);
                    self.schedule_flush(token);
                }
            }
            Incoming::Pong => {}
            Incoming::Close { code, reason } => {
                if !conn.close_sent {
                    // §5.5.1: echo the status code back, then close.
                    log::info!("{}: {} sent close {code:?} {reason:?}", conn.peer, role.kind());
                    let reply = match code {
                        Some(code) => frame::close(code, ""),
                        None => frame::encode(frame::OP_CLOSE, b""),
                    };
                    conn.send(&reply, now);
                    conn.close_sent = true;
                    conn.close_code = Some(code.unwrap_or(1005));
                }
                self.enter_closing(token, now);
            }
            // After our close frame, data is no longer answered.
            Incoming::Data { .. } if conn.close_sent => {}
            Incoming::Data { opcode, buf } => match role {
                Role::Echo => {
                    conn.send(&frame::encode_in_place(opcode, buf), now);
                    if conn.out.cost() > limit {
                        conn.read_paused = true;
                    }
                    self.schedule_flush(token);
                }
                Role::Publisher(name) if opcode == OP_BINARY => {
                    let Some(&kind) = buf.get(MAX_HEADER) else {
                        log::warn!("{}: empty message from publisher of {name}, closing with 1007", conn.peer);
                        self.start_close(token, 1007, "empty message", now);
                        return;
                    };
                    let name = name.clone();
                    let payload_len = buf.len() - MAX_HEADER;
                    let chunk = frame::encode_in_place(OP_BINARY, buf);
                    let (hub, mut clients) = self.parts();
                    if !hub.publish(&name, kind, payload_len, chunk, now, &mut clients) {
                        self.conns[token].read_paused = true;
                    }
                }
                // Text from publishers and anything from watchers is ignored.
                Role::Publisher(_) | Role::Watcher(_) => {}
            },
        }
    }
}
