//! The static file resolver. Property: whatever the request path, a resolved file lies inside
//! the root. A fixture tree with a secret beside the root and symlinks leading out is made once.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use camrelay::http::static_files;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("camrelay-fuzz-{}", std::process::id()));
        let public = base.join("public");
        std::fs::create_dir_all(public.join("js")).expect("fixture dir");
        std::fs::write(public.join("index.html"), "home").expect("fixture file");
        std::fs::write(public.join("js/app.js"), "app").expect("fixture file");
        std::fs::write(base.join("secret.txt"), "secret").expect("fixture file");
        let _ = std::os::unix::fs::symlink(base.join("secret.txt"), public.join("leak.txt"));
        let _ = std::os::unix::fs::symlink(&base, public.join("up"));
        public.canonicalize().expect("canonical root")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(file) = static_files::resolve(root(), path) {
        assert!(file.starts_with(root()), "{path:?} resolved outside the root: {file:?}");
        assert!(file.is_file());
    }
});
