//! TLS settings: a certificate from PEM files, or a self-signed one made once and kept beside
//! the config so a browser's exception for it survives restarts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// File names of the self-signed certificate and its key, in the config's folder.
pub const SELF_SIGNED_CERT: &str = "camrelay-self-signed.pem";
pub const SELF_SIGNED_KEY: &str = "camrelay-self-signed-key.pem";

pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, as browsers show it (`AB:CD:...`).
    pub fingerprint: String,
    pub cert_path: PathBuf,
    /// The certificate was made just now (not found on disk).
    pub generated: bool,
}

/// The TLS setup the config asks for, or `None` for plain HTTP.
pub fn load(config: &Config, public_host: &str) -> Result<Option<Tls>, String> {
    let (cert_path, key_path, generated) = if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        (cert.clone(), key.clone(), false)
    } else if config.tls_self_signed {
        let cert = config.config_dir.join(SELF_SIGNED_CERT);
        let key = config.config_dir.join(SELF_SIGNED_KEY);
        let generated = !(cert.exists() && key.exists());
        if generated {
            write_self_signed(&cert, &key, &names(public_host))?;
        }
        (cert, key, generated)
    } else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect())
        .map_err(|e| format!("tls_cert {}: {e}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!("tls_cert {}: no certificate in the file", cert_path.display()));
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("tls_key {}: {e}", key_path.display()))?;
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls { config: Arc::new(server), fingerprint, cert_path, generated }))
}

/// Every name a browser on this machine or the LAN may use for the server.
fn names(public_host: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !public_host.is_empty() {
        names.push(public_host.to_owned());
    }
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        names.extend(interfaces.iter().map(|i| i.ip().to_string()));
    }
    names.sort();
    names.dedup();
    names
}

fn write_self_signed(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "camrelay self-signed");
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(name.clone().try_into().map_err(|e| format!("{name}: {e}"))?),
        };
        params.subject_alt_names.push(san);
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("self-signed key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("self-signed certificate: {e}"))?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem()).map_err(|e| format!("{}: {e}", cert_path.display()))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("camrelay-tls-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config { tls_self_signed: true, config_dir: dir.clone(), ..Config::default() };
        let first = load(&config, "cam.example").unwrap().unwrap();
        assert!(first.generated);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let second = load(&config, "cam.example").unwrap().unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint, "the same certificate across restarts");
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(SELF_SIGNED_KEY)).unwrap().permissions(),
        );
        assert_eq!(key_mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let config = Config {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..Config::default()
        };
        let Err(e) = load(&config, "") else { panic!("loaded a missing certificate") };
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
        assert!(load(&Config::default(), "").unwrap().is_none());
    }
}
