//! `server.config` (`key = value` lines) and the command line that overrides it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Config {
    pub address: IpAddr,
    pub port: u16,
    /// `host:port` shown in links and the banner; `None` means the bound address.
    pub public_address: Option<String>,
    pub public_dir: PathBuf,
    pub loglevel: log::LevelFilter,
    pub max_connections: usize,
    pub max_message_bytes: usize,
    pub watcher_queue_bytes: usize,
    pub watcher_max_lag_ms: u64,
    pub publish_key: String,
    pub allowed_origins: Vec<String>,
    pub request_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub echo_endpoint: bool,
    /// PEM certificate chain and private key: with both, the server speaks HTTPS/WSS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Make (once) and use a self-signed certificate, stored in `config_dir`.
    pub tls_self_signed: bool,
    /// With TLS, a plain-HTTP port that redirects pages to HTTPS.
    pub http_port: Option<u16>,
    /// The config file's folder (the working directory without one): where a self-signed
    /// certificate is kept, so a browser's exception survives restarts.
    pub config_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 8888,
            public_address: None,
            public_dir: PathBuf::from("public"),
            loglevel: log::LevelFilter::Info,
            max_connections: 10_000,
            max_message_bytes: 16 * 1024 * 1024,
            watcher_queue_bytes: 4 * 1024 * 1024,
            watcher_max_lag_ms: 2000,
            publish_key: String::new(),
            allowed_origins: Vec::new(),
            request_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            echo_endpoint: false,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            http_port: None,
            config_dir: PathBuf::from("."),
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

pub const USAGE: &str = "\
camrelay: a live camera and microphone streaming relay

USAGE: camrelay [OPTIONS]

OPTIONS:
  --config PATH       config file (default: ./server.config if it exists)
  --address IP        address to listen on (overrides the config file)
  --port N            port to listen on, 0 for any free port
  --public-dir PATH   directory with the web pages
  --loglevel LEVEL    off, error, warn, info, debug or trace
  --self-signed       serve HTTPS with a self-signed certificate kept beside the config,
                      on every interface unless --address is given (for phones on the LAN)
  --help              print this help
  --version           print the version

Exit codes: 0 after a clean shutdown, 1 when the port cannot be bound, 2 for a bad config or flag.";

/// Parses the command line and the config file it names. Errors are meant for the user as-is.
pub fn from_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config_path: Option<PathBuf> = None;
    let mut overrides: Vec<(&str, String)> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("version") | Short('V') => return Ok(Command::Version),
            Long("self-signed") => overrides.push(("tls_self_signed", "true".to_owned())),
            Long("config") => config_path = Some(parser.value().map_err(|e| e.to_string())?.into()),
            Long(flag @ ("address" | "port" | "public-dir" | "loglevel")) => {
                let (key, flag) = match flag {
                    "address" => ("address", "address"),
                    "port" => ("port", "port"),
                    "public-dir" => ("public_dir", "public-dir"),
                    _ => ("loglevel", "loglevel"),
                };
                let value = parser.value().map_err(|e| e.to_string())?;
                let value = value.into_string().map_err(|_| format!("--{flag}: not valid UTF-8"))?;
                overrides.push((key, value));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let mut config = Config::default();
    let default_path = Path::new("server.config");
    match &config_path {
        Some(path) => load_file(&mut config, path)?,
        None if default_path.exists() => load_file(&mut config, default_path)?,
        None => {}
    }
    for (key, value) in &overrides {
        let (key, value) = (*key, value.as_str());
        // Paths given on the command line are relative to the working directory.
        set(&mut config, key, value, Path::new("")).map_err(|e| format!("--{}: {e}", key.replace('_', "-")))?;
    }
    // Self-signed HTTPS exists for other machines on the LAN: listen where they can reach it.
    let self_signed_flag = overrides.iter().any(|(k, _)| *k == "tls_self_signed");
    let address_flag = overrides.iter().any(|(k, _)| *k == "address");
    if self_signed_flag && !address_flag {
        config.address = IpAddr::from([0, 0, 0, 0]);
    }
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return Err("tls_cert and tls_key must be set together".to_owned());
    }
    Ok(Command::Run(Box::new(config)))
}

fn load_file(config: &mut Config, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Paths in the file are relative to the file, so the server runs from any directory.
    let base = path.parent().unwrap_or(Path::new(""));
    config.config_dir = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base.to_path_buf() };
    parse(config, &text, base).map_err(|e| format!("{}: {e}", path.display()))
}

/// Applies `key = value` lines to `config`; an error names the line and the key.
pub fn parse(config: &mut Config, text: &str, base: &Path) -> Result<(), String> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`, got `{line}`", i + 1));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        set(config, key, value, base).map_err(|e| format!("line {}: {key}: {e}", i + 1))?;
    }
    Ok(())
}

/// Strips one pair of matching quotes; an unquoted value may end in a `# comment`.
fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    match value.find(" #") {
        Some(at) => value[..at].trim_end(),
        None => value,
    }
}

fn set(c: &mut Config, key: &str, value: &str, base: &Path) -> Result<(), String> {
    match key {
        "address" => c.address = parse_address(value)?,
        "port" => c.port = number(value)?,
        "public_address" => c.public_address = (!value.is_empty()).then(|| value.to_owned()),
        "public_dir" => c.public_dir = base.join(value),
        "loglevel" => {
            c.loglevel =
                value.parse().map_err(|_| format!("`{value}` is not one of off, error, warn, info, debug, trace"))?
        }
        "max_connections" => c.max_connections = positive(value)?,
        "max_message_bytes" => c.max_message_bytes = positive(value)?,
        "watcher_queue_bytes" => c.watcher_queue_bytes = positive(value)?,
        "watcher_max_lag_ms" => c.watcher_max_lag_ms = positive(value)?,
        "publish_key" => c.publish_key = value.to_owned(),
        "allowed_origins" => {
            c.allowed_origins = value.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect()
        }
        "request_timeout_ms" => c.request_timeout_ms = positive(value)?,
        "idle_timeout_ms" => c.idle_timeout_ms = positive(value)?,
        "echo_endpoint" => c.echo_endpoint = boolean(value)?,
        "tls_cert" => c.tls_cert = (!value.is_empty()).then(|| base.join(value)),
        "tls_key" => c.tls_key = (!value.is_empty()).then(|| base.join(value)),
        "tls_self_signed" => c.tls_self_signed = boolean(value)?,
        "http_port" => c.http_port = if value.is_empty() { None } else { Some(number(value)?) },
        _ => return Err("unknown key".to_owned()),
    }
    Ok(())
}

fn parse_address(value: &str) -> Result<IpAddr, String> {
    if value == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    value.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| format!("`{value}` is not an IP address"))
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("`{value}` is not a valid number"))
}

fn positive<T: std::str::FromStr + Default + PartialEq>(value: &str) -> Result<T, String> {
    let n: T = number(value)?;
    if n == T::default() {
        return Err("must be greater than 0".to_owned());
    }
    Ok(n)
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("`{value}` is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Config, String> {
        let mut c = Config::default();
        parse(&mut c, text, Path::new("/etc/relay")).map(|_| c)
    }

    #[test]
    fn keys_comments_and_quotes() {
        let c = parsed(
            "# a comment\n\naddress = 0.0.0.0\nport = 0\npublic_address = \"cam.local:8888\"\npublic_dir = 'www'\n\
             loglevel = debug\nallowed_origins = https://a.example, http://b:1\necho_endpoint = true # on\n\
             watcher_queue_bytes = 1000\n",
        )
        .unwrap();
        assert_eq!(c.address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(c.port, 0);
        assert_eq!(c.public_address.as_deref(), Some("cam.local:8888"));
        assert_eq!(c.public_dir, PathBuf::from("/etc/relay/www"));
        assert_eq!(c.loglevel, log::LevelFilter::Debug);
        assert_eq!(c.allowed_origins, vec!["https://a.example", "http://b:1"]);
        assert!(c.echo_endpoint);
        assert_eq!(c.watcher_queue_bytes, 1000);
    }

    #[test]
    fn defaults_are_the_contract_and_the_repo_config_states_them() {
        let d = Config::default();
        assert_eq!((d.address, d.port, d.public_address.as_deref()), (IpAddr::from([127, 0, 0, 1]), 8888, None));
        assert_eq!((d.public_dir.as_path(), d.loglevel), (Path::new("public"), log::LevelFilter::Info));
        assert_eq!((d.max_connections, d.max_message_bytes), (10_000, 16_777_216));
        assert_eq!((d.watcher_queue_bytes, d.watcher_max_lag_ms), (4_194_304, 2000));
        assert!(d.publish_key.is_empty() && d.allowed_origins.is_empty() && !d.echo_endpoint);
        assert_eq!((d.request_timeout_ms, d.idle_timeout_ms), (10_000, 60_000));
        // `cargo run --release` reads the repo's server.config: it must say the same.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/server.config")).unwrap();
        let repo = parsed(&text).unwrap();
        assert_eq!(
            format!("{:?}", Config { public_dir: d.public_dir.clone(), config_dir: d.config_dir.clone(), ..repo }),
            format!("{d:?}")
        );
        assert_eq!(parsed(&text).unwrap().public_dir, Path::new("/etc/relay/public"));
    }

    #[test]
    fn tls_keys() {
        let c = parsed("tls_cert = cert.pem\ntls_key = \"/keys/key.pem\"\nhttp_port = 8080\ntls_self_signed = no\n")
            .unwrap();
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/relay/cert.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/keys/key.pem")));
        assert_eq!(c.http_port, Some(8080));
        assert!(!c.tls_self_signed);
        assert!(parsed("http_port = web").unwrap_err().contains("http_port"));
        let args = |a: &[&str]| from_args(a.iter().map(std::ffi::OsString::from));
        let Ok(Command::Run(c)) = args(&["--self-signed", "--port", "0"]) else { panic!("--self-signed") };
        assert!(c.tls_self_signed);
        assert_eq!(c.address, IpAddr::from([0, 0, 0, 0]), "--self-signed listens for the LAN");
        let Ok(Command::Run(c)) = args(&["--self-signed", "--address", "127.0.0.1"]) else { panic!("--address") };
        assert_eq!(c.address, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        assert_eq!(parsed("port = 80\nbogus = 1").unwrap_err(), "line 2: bogus: unknown key");
        assert!(parsed("port = 70000").unwrap_err().starts_with("line 1: port:"));
        assert!(parsed("max_connections = 0").unwrap_err().contains("greater than 0"));
        assert!(parsed("echo_endpoint = maybe").unwrap_err().contains("echo_endpoint"));
        assert!(parsed("just words").unwrap_err().starts_with("line 1:"));
    }

    #[test]
    fn command_line() {
        let args = |a: &[&str]| from_args(a.iter().map(std::ffi::OsString::from));
        assert!(matches!(args(&["--help"]), Ok(Command::Help)));
        assert!(matches!(args(&["--version"]), Ok(Command::Version)));
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(args(&["--port", "x"]).unwrap_err().contains("--port"));
        assert!(args(&["--config", "/nonexistent/relay.config"]).is_err());
        let Ok(Command::Run(c)) = args(&["--config", "/dev/null", "--port", "0", "--public-dir", "www"]) else {
            panic!("expected a config");
        };
        assert_eq!((c.port, c.public_dir.as_path()), (0, Path::new("www")));
    }
}
