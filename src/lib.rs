//! camrelay: a live camera-and-microphone streaming relay on a single-threaded mio reactor.
//!
//! `reactor` owns the sockets and the event loop; `http` and `ws` are the protocols, free of
//! I/O; `hub` relays streams from publishers to watchers; `config` reads settings.

pub mod chunk;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod reactor;
pub mod tls;
pub mod ws;
