//! What sits between a connection and its socket: nothing, or a rustls session. Both are
//! non-blocking `Read` + `Write`, so the HTTP and WebSocket layers never know which one
//! they talk through.
//!
//! With TLS, `write` takes plaintext into rustls only after the ciphertext rustls already
//! holds has gone to the socket, so rustls never buffers more than one write's worth: the
//! connection's own queue stays the one place where output waits (and is bounded).

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::ServerConnection;

/// Plaintext taken into rustls per write call (a few TLS records).
const TLS_WRITE_CHUNK: usize = 64 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

pub struct TlsSocket {
    socket: TcpStream,
    session: ServerConnection,
}

impl Transport {
    pub fn tls(socket: TcpStream, session: ServerConnection) -> Transport {
        Transport::Tls(Box::new(TlsSocket { socket, session }))
    }

    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// Ciphertext (handshake, alerts, records) is waiting for the socket.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.session.wants_write(),
        }
    }

    /// Sends what rustls holds; `Ok(true)` when nothing is left.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.write_ciphertext(),
        }
    }

    /// Ends the write side: `close_notify` first with TLS, then the TCP shutdown once it is out.
    /// `Ok(false)`: the alert is still waiting for the socket; call again when writable.
    pub fn shutdown_write(&mut self) -> io::Result<bool> {
        if let Transport::Tls(t) = self {
            if !t.session.is_handshaking() {
                t.session.send_close_notify();
            }
            if !t.write_ciphertext()? {
                return Ok(false);
            }
        }
        self.tcp().shutdown(Shutdown::Write)?;
        Ok(true)
    }
}

impl TlsSocket {
    fn write_ciphertext(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Fills `buf` with as much plaintext as the socket has (many TLS records per call, so TLS
    /// input costs about as many reactor reads as plain input).
    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.session.reader().read(&mut buf[filled..]) {
                // close_notify: the end of input, once what came before it is delivered.
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP ended without close_notify: for us that is an ordinary end of input.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            match self.session.read_tls(&mut self.socket) {
                Ok(0) => return Ok(filled),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.session.process_new_packets() {
                // Try to tell the peer why (the alert is queued by rustls), then give up.
                let _ = self.write_ciphertext();
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
            // The handshake answers as it goes; a full socket leaves the rest for `flush`.
            self.write_ciphertext()?;
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read_plaintext(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            Transport::Tls(t) => {
                if !t.write_ciphertext()? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let mut taken = 0;
                for b in bufs {
                    let room = TLS_WRITE_CHUNK - taken;
                    if room == 0 {
                        break;
                    }
                    let part = &b[..b.len().min(room)];
                    let n = t.session.writer().write(part)?;
                    taken += n;
                    if n < part.len() {
                        break;
                    }
                }
                // Whatever the socket does not take now goes out on the next writable edge.
                t.write_ciphertext()?;
                if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(taken)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_pending()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
