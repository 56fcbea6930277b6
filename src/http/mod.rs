//! HTTP/1.1: request heads, responses, routing and static files. No I/O here.

pub mod request;
pub mod response;
pub mod router;
pub mod static_files;
