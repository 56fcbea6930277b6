//! Ending connections: the server's close, a lost connection, and our own close at the end.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use camrelay::ws::frame::OP_CLOSE;
use mio::Events;

use super::Run;
use crate::conn::{Phase, Role};
use crate::frames::push_masked_frame;
use crate::transport::{recv, write_some};
use crate::{soak, tls};

const CLOSE_GRACE: Duration = Duration::from_millis(500);

impl Run {
    pub fn drop_socket(&mut self, token: usize) {
        if let Some(mut sock) = self.conns[token].sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        self.conns[token].tls = None;
    }

    /// The connection ended without our asking: EOF, reset or a protocol error.
    pub(super) fn lost(&mut self, token: usize, why: String) {
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
    pub(super) fn server_closed(&mut self, token: usize, code: Option<u16>) {
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

    pub(super) fn on_closing(&mut self, token: usize) {
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
    pub fn close_all(&mut self, events: &mut Events) {
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
