//! The event loop: poll, then serve what is ready and what is due.

use std::io;
use std::time::{Duration, Instant};

use mio::Events;

use super::Run;
use crate::conn::{IO_BUDGET, Phase, Role};
use crate::receive::{After, read_into, read_tls_into};
use crate::transport::{send, write_some};

impl Run {
    pub(super) fn run_until(&mut self, deadline: Instant, events: &mut Events) -> Result<(), String> {
        while Instant::now() < deadline {
            self.tick(events, Some(deadline))?;
        }
        Ok(())
    }

    /// One turn of the loop: wait for events or the next deadline, then serve what is ready.
    pub fn tick(&mut self, events: &mut Events, deadline: Option<Instant>) -> Result<(), String> {
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

    pub fn requeue(&mut self, token: usize) {
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

    pub(super) fn on_open(&mut self, token: usize, now: Instant) {
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
}
