//! One connection's state, whether it watches or publishes.

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::frames::FrameParser;
use crate::meter::Acct;

/// Bytes read or written for one connection before others get their turn.
pub const IO_BUDGET: usize = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Watcher,
    /// Index into `Run::pubs`.
    Publisher(usize),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
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

pub struct Conn {
    pub role: Role,
    pub stream: usize,
    pub sock: Option<TcpStream>,
    pub phase: Phase,
    pub attempts: u32,
    pub req_sent: usize,
    pub resp: Vec<u8>,
    /// Readiness the OS reported and we have not used up yet (edge-triggered).
    pub readable: bool,
    pub writable: bool,
    /// In `Run::pending`: its I/O budget ran out with work left.
    pub queued: bool,
    pub opened: bool,
    pub parser: FrameParser,
    /// Pongs and close frames waiting to be written.
    pub ctrl_out: Vec<u8>,
    pub close_code: Option<Option<u16>>,
    pub acct: Acct,
    /// `wss://`: the TLS session between the socket and the WebSocket bytes.
    pub tls: Option<Box<ClientConnection>>,
    /// Soak mode: not reading (a stalled viewer); it stalled at least once this session.
    pub stalled: bool,
    pub stalled_ever: bool,
}

impl Conn {
    pub fn new(role: Role, stream: usize) -> Conn {
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
