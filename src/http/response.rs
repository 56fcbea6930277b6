//! HTTP/1.1 response heads and small bodies.

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response. `head_only` (for HEAD) keeps `Content-Length` but drops the body.
pub struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        let mut r = Response { status, headers: Vec::new(), body };
        if status != 304 {
            r.headers.push(("Content-Type", content_type.to_owned()));
        }
        r
    }

    /// A short plain-text answer, e.g. for errors.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n").into_bytes())
    }

    pub fn error(status: u16) -> Response {
        Response::text(status, reason(status))
    }

    pub fn json(body: String) -> Response {
        Response::new(200, "application/json", body.into_bytes()).header("Cache-Control", "no-store")
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Serializes the response; `keep_alive` decides the `Connection` header.
    pub fn into_bytes(self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        use std::fmt::Write;
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if self.status != 304 {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
        let mut out = head.into_bytes();
        if !head_only && self.status != 304 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_head_and_body() {
        let bytes = Response::text(404, "Not Found").into_bytes(false, true);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\nNot Found\n"
        );
    }

    #[test]
    fn head_keeps_length_but_not_body() {
        let bytes = Response::new(200, "text/html", b"<p>hi</p>".to_vec()).into_bytes(true, false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Length: 9\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
