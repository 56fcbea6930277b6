//! Maps a request path to what the server does with it.

/// Where a request goes. Names in routes are already checked against `is_valid_name`.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A page under `public_dir` with a fixed file name.
    Page(&'static str),
    /// Any other path: a file under `public_dir`, if there is one.
    File(&'a str),
    Healthz,
    Metrics,
    ApiStreams,
    ApiInfo,
    ApiPublish(&'a str),
    /// `None`: the server picks a random name.
    WsPublish(Option<&'a str>),
    WsWatch(&'a str),
    WsEcho,
    /// A stream route whose name breaks `[A-Za-z0-9_-]{1,64}`: 400.
    BadName,
    NotFound,
}

impl Route<'_> {
    pub fn is_websocket(&self) -> bool {
        matches!(self, Route::WsPublish(_) | Route::WsWatch(_) | Route::WsEcho)
    }
}

/// A stream name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Routes a path (without query). `echo_enabled` turns on `/ws/echo`.
pub fn route(path: &str, echo_enabled: bool) -> Route<'_> {
    match path {
        "/" | "/index.html" => Route::Page("index.html"),
        "/capture" => Route::Page("capture.html"),
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        "/api/streams" => Route::ApiStreams,
        "/api/info" => Route::ApiInfo,
        "/ws/publish" => Route::WsPublish(None),
        "/ws/echo" if echo_enabled => Route::WsEcho,
        _ => {
            if let Some(name) = path.strip_prefix("/ws/publish/") {
                with_name(name, |n| Route::WsPublish(Some(n)))
            } else if let Some(name) = path.strip_prefix("/ws/watch/") {
                with_name(name, Route::WsWatch)
            } else if let Some(name) = path.strip_prefix("/api/publish/") {
                with_name(name, Route::ApiPublish)
            } else if let Some(name) = path.strip_prefix("/cast/") {
                // A cast link with an impossible name can never play: say so instead of a blank page.
                if is_valid_name(name) { Route::Page("cast.html") } else { Route::NotFound }
            } else if path.starts_with("/ws/") || path.starts_with("/api/") {
                Route::NotFound
            } else {
                Route::File(path)
            }
        }
    }
}

fn with_name<'a>(name: &'a str, make: impl FnOnce(&'a str) -> Route<'a>) -> Route<'a> {
    if is_valid_name(name) { make(name) } else { Route::BadName }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/", false), Route::Page("index.html"));
        assert_eq!(route("/capture", false), Route::Page("capture.html"));
        assert_eq!(route("/cast/cam-1", false), Route::Page("cast.html"));
        assert_eq!(route("/cast/bad.name", false), Route::NotFound);
        assert_eq!(route("/ws/publish", false), Route::WsPublish(None));
        assert_eq!(route("/ws/publish/a_B-9", false), Route::WsPublish(Some("a_B-9")));
        assert_eq!(route("/ws/publish/", false), Route::BadName);
        assert_eq!(route("/ws/watch/x y", false), Route::BadName);
        assert_eq!(route(&format!("/ws/watch/{}", "a".repeat(65)), false), Route::BadName);
        assert_eq!(route(&format!("/ws/watch/{}", "a".repeat(64)), false), Route::WsWatch(&"a".repeat(64)));
        assert_eq!(route("/ws/echo", false), Route::NotFound);
        assert_eq!(route("/ws/echo", true), Route::WsEcho);
        assert_eq!(route("/ws/other", true), Route::NotFound);
        assert_eq!(route("/api/publish/cam", false), Route::ApiPublish("cam"));
        assert_eq!(route("/js/app.js", false), Route::File("/js/app.js"));
    }
}
