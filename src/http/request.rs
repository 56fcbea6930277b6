//! HTTP/1.1 request heads, parsed with `httparse` under a size limit.

/// RFC 9110 leaves the limit to the server; heads past it get 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum HttpError {
    Malformed,
    HeadTooLarge,
    TooManyHeaders,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
        }
    }
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query, still percent-encoded).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lower-cased; values lossily decoded (non-UTF-8 values are never needed).
    headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// True when a comma-separated header holds `token` (case-insensitive), in any of its lines.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    /// The value of a query parameter (not percent-decoded; our parameters are plain tokens).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or("");
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            false
        } else if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            true
        }
    }

    /// The body length the client announced: `Ok(0)` for none, `Err` for anything we do not
    /// accept (chunked or conflicting lengths).
    pub fn body_length(&self) -> Result<u64, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::Malformed);
        }
        let mut length = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            let n: u64 = v.trim().parse().map_err(|_| HttpError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed);
            }
            length = Some(n);
        }
        Ok(length.unwrap_or(0))
    }
}

/// Parses one request head from the front of `buf`: `Ok(None)` means it is not complete yet.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Request)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::Malformed),
    };
    if consumed > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed);
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    Ok(Some((consumed, Request { method: method.to_owned(), target: target.to_owned(), minor_version, headers })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str) -> Request {
        parse(head.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn parses_a_head_and_reports_its_length() {
        let head = "GET /capture?autostart=1&key=a%20b HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n";
        let (n, r) = parse(format!("{head}GET / HTTP/1.1\r\n").as_bytes()).unwrap().unwrap();
        assert_eq!(n, head.len());
        assert_eq!(r.method, "GET");
        assert_eq!(r.path(), "/capture");
        assert_eq!(r.query_param("autostart"), Some("1"));
        assert_eq!(r.query_param("key"), Some("a%20b"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("host"), Some("x"));
        assert!(r.keep_alive());
    }

    #[test]
    fn every_prefix_needs_more_bytes() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..head.len() {
            assert!(parse(&head[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn limits_and_malformed_heads() {
        assert_eq!(parse(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").unwrap_err(), HttpError::Malformed);
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(), HttpError::Malformed);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(big.as_bytes()).unwrap_err(), HttpError::HeadTooLarge);
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(head.as_bytes()).unwrap_err().status(), 431);
    }

    #[test]
    fn body_lengths() {
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n").body_length(), Ok(0));
        assert_eq!(req("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").body_length(), Ok(5));
        assert!(req("GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").body_length().is_err());
        assert!(req("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").body_length().is_err());
        assert!(req("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").body_length().is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::parse;

    proptest! {
        /// A valid head split anywhere: every prefix needs more, the whole parses the same.
        #[test]
        fn split_anywhere_parses_the_same(
            path in "/[a-z0-9/._~%-]{0,40}",
            headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..10),
            cut in any::<usize>(),
        ) {
            let mut head = format!("GET {path} HTTP/1.1\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            head.push_str("\r\n");
            let bytes = head.as_bytes();
            let (n, whole) = parse(bytes).unwrap().unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(whole.path(), path.split('?').next().unwrap());
            prop_assert_eq!(whole.headers.len(), headers.len());
            let cut = cut % bytes.len();
            prop_assert!(parse(&bytes[..cut]).unwrap().is_none());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..20_000)) {
            let _ = parse(&bytes);
        }
    }
}
