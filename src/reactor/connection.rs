//! One client connection: its socket, its phase, and its write queue.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use super::out_queue::{Flush, OutQueue};
use super::transport::Transport;
use crate::chunk::Chunk;
use crate::ws::receiver::Receiver;

/// What an open WebSocket is for; the stream name is shared with the hub.
pub enum Role {
    Publisher(Rc<str>),
    Watcher(Rc<str>),
    Echo,
}

impl Role {
    pub fn kind(&self) -> &'static str {
        match self {
            Role::Publisher(_) => "publisher",
            Role::Watcher(_) => "watcher",
            Role::Echo => "echo",
        }
    }
}

/// The phase of a connection. Each phase owns the input state it needs.
pub enum Phase {
    /// Reading request heads and answering them, with keep-alive and pipelining.
    Http {
        /// Received bytes not yet parsed (at most one request head plus what follows it).
        input: Vec<u8>,
        /// Bytes of a request body still to be skipped.
        skip_body: u64,
    },
    /// An open WebSocket.
    WebSocket { role: Role, receiver: Receiver },
    /// Done: the queue is flushed, then the write side is shut and input is discarded until
    /// the peer closes too (closing with unread input would reset the connection and could
    /// destroy the last response in flight).
    Closing,
}

pub struct Connection {
    pub socket: Transport,
    pub peer: SocketAddr,
    /// Accepted on `http_port` beside HTTPS: pages are redirected, upgrades only from loopback.
    pub redirect_only: bool,
    pub phase: Phase,
    pub out: OutQueue,
    /// The last time bytes arrived (idle pings and timeouts).
    pub last_input: Instant,
    /// The last time the socket took output: a response still moving is not timed out.
    pub last_write: Instant,
    /// When the current phase gives up (request timeout, close handshake timeout).
    pub deadline: Option<Instant>,
    /// A close frame was queued: nothing may follow it on the wire.
    pub close_sent: bool,
    /// The WebSocket close code, sent or received, for the log and metrics.
    pub close_code: Option<u16>,
    pub ping_sent: bool,
    /// Input is not read until output drains (backpressure).
    pub read_paused: bool,
    pub write_shut: bool,
    /// The peer shut its write side (read returned 0): nothing more to read.
    pub peer_closed: bool,
    /// Already on the reactor's flush list this tick.
    pub flush_scheduled: bool,
    /// The socket said `WouldBlock`: no use flushing before its writable edge.
    pub write_blocked: bool,
}

impl Connection {
    pub fn new(socket: Transport, peer: SocketAddr, now: Instant, request_deadline: Instant) -> Connection {
        Connection {
            socket,
            peer,
            redirect_only: false,
            phase: Phase::Http { input: Vec::new(), skip_body: 0 },
            out: OutQueue::default(),
            last_input: now,
            last_write: now,
            deadline: Some(request_deadline),
            close_sent: false,
            close_code: None,
            ping_sent: false,
            read_paused: false,
            write_shut: false,
            peer_closed: false,
            flush_scheduled: false,
            write_blocked: false,
        }
    }

    /// Queues output unless a close frame was already queued.
    pub fn send(&mut self, chunk: &Rc<Chunk>, now: Instant) {
        if !self.close_sent {
            self.out.push(chunk.clone(), now);
        }
    }

    /// Takes a place on the flush list, unless it has one or its socket is full (then the
    /// writable edge flushes it). `true` when the caller must add it to the list.
    pub fn claim_flush(&mut self) -> bool {
        let claim = !self.flush_scheduled && !self.write_blocked;
        self.flush_scheduled |= claim;
        claim
    }

    pub fn kind(&self) -> &'static str {
        match &self.phase {
            Phase::Http { .. } => "http",
            Phase::WebSocket { role, .. } => role.kind(),
            Phase::Closing => "closing",
        }
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket { .. })
    }

    /// Writes what the queue (and TLS) holds; once a closing connection is flushed, shuts its
    /// write side.
    pub fn flush(&mut self) -> io::Result<usize> {
        let (state, written) = self.out.flush(&mut self.socket)?;
        let done = matches!(state, Flush::Done) && self.socket.flush_pending()?;
        self.write_blocked = !done;
        if done && matches!(self.phase, Phase::Closing) && !self.write_shut {
            // `Ok(false)`: a TLS close_notify still waits for the socket; the next writable
            // edge comes back here. An error means the peer is gone, which the close handles.
            self.write_shut = !matches!(self.socket.shutdown_write(), Ok(false));
        }
        Ok(written)
    }

    /// Output is waiting: queued frames, or TLS records not yet on the socket.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.socket.wants_write()
    }
}
