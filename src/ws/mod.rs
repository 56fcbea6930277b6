//! WebSocket (RFC 6455, version 13): the opening handshake, the client frame decoder and the
//! server frame encoder. No I/O here; the reactor feeds bytes in and sends chunks out.

pub mod frame;
pub mod handshake;
pub mod receiver;

#[cfg(test)]
pub(crate) mod props;
