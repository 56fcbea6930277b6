//! A connection's WebSocket bytes, straight through the socket or through TLS.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::tls;

/// A non-blocking write of WebSocket bytes: straight to the socket, or through TLS.
pub fn send(sock: &mut TcpStream, tls: &mut Option<Box<ClientConnection>>, data: &[u8]) -> io::Result<usize> {
    match tls {
        None => sock.write(data),
        Some(tls) => tls::send(sock, tls, data),
    }
}

/// A non-blocking read of WebSocket bytes: straight from the socket, or through TLS.
pub fn recv(sock: &mut TcpStream, tls: &mut Option<Box<ClientConnection>>, buf: &mut [u8]) -> io::Result<usize> {
    match tls {
        None => sock.read(buf),
        Some(tls) => tls::recv(sock, tls, buf),
    }
}

/// Writes as much of `out` as the socket takes, then any TLS records still pending; `Ok(false)`
/// when it would block.
pub fn write_some(
    sock: &mut TcpStream,
    tls: &mut Option<Box<ClientConnection>>,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
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
