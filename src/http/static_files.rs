//! Serving files from `public_dir`: percent-decoding, confinement to the root (also through
//! symlinks), content types and `ETag` revalidation.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::response::Response;

/// Why a path maps to no file: the answer is 400 for paths no file could have, else 404.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    BadEncoding,
    NotFound,
}

impl PathError {
    pub fn status(&self) -> u16 {
        match self {
            PathError::BadEncoding => 400,
            PathError::NotFound => 404,
        }
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8 (which also rules out overlong forms).
pub fn percent_decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

/// Maps a request path (still percent-encoded) to a regular file inside `root`, which must
/// be canonical. Dot segments, hidden files, backslashes and NUL never resolve; symlinks
/// are followed only while they stay inside the root.
pub fn resolve(root: &Path, raw_path: &str) -> Result<PathBuf, PathError> {
    let path = percent_decode(raw_path)?;
    if !path.starts_with('/') || path.contains(['\0', '\\']) {
        return Err(PathError::BadEncoding);
    }
    let mut candidate = root.to_path_buf();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') {
            return Err(PathError::NotFound);
        }
        candidate.push(segment);
    }
    let real = candidate.canonicalize().map_err(|_| PathError::NotFound)?;
    if !real.starts_with(root) || !real.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(real)
}

pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// A file response, or 304 when `if_none_match` names the current `ETag`.
pub fn serve(file: &Path, if_none_match: Option<&str>) -> Response {
    let Ok(meta) = std::fs::metadata(file) else {
        return Response::error(404);
    };
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{:x}\"", meta.len(), mtime);
    let matches = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let response = if matches {
        Response::new(304, "", Vec::new())
    } else {
        match std::fs::read(file) {
            Ok(body) => Response::new(200, content_type(file), body),
            Err(e) => {
                log::warn!("cannot read {}: {e}", file.display());
                return Response::error(404);
            }
        }
    };
    // Revalidate every time: pages change when the server is upgraded, and a 304 is cheap.
    response.header("ETag", etag).header("Cache-Control", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("camrelay-static-{}", std::process::id()));
        let root = dir.join("public");
        std::fs::create_dir_all(root.join("js")).unwrap();
        std::fs::write(root.join("index.html"), "hi").unwrap();
        std::fs::write(root.join("js/app.js"), "x").unwrap();
        std::fs::write(root.join("a b.txt"), "x").unwrap();
        std::fs::write(dir.join("secret.txt"), "secret").unwrap();
        let _ = std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("link.txt"));
        root.canonicalize().unwrap()
    }

    #[test]
    fn resolves_files_inside_the_root_only() {
        let root = fixture();
        assert_eq!(resolve(&root, "/index.html"), Ok(root.join("index.html")));
        assert_eq!(resolve(&root, "/js//app.js"), Ok(root.join("js/app.js")));
        assert_eq!(resolve(&root, "/a%20b.txt"), Ok(root.join("a b.txt")));
        for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/js/%2E%2E/%2e%2e/secret.txt", "/link.txt", "/js", "/"] {
            assert_eq!(resolve(&root, bad), Err(PathError::NotFound), "{bad}");
        }
        for bad in ["/..%5csecret.txt", "/index.html%00", "/%c0%ae%c0%ae/secret.txt", "/%zz", "/%2", "secret.txt"] {
            assert_eq!(resolve(&root, bad), Err(PathError::BadEncoding), "{bad}");
        }
        assert_eq!(resolve(&root, "/%2e%2e%2fsecret.txt"), Err(PathError::NotFound));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a.HTML")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("a.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
