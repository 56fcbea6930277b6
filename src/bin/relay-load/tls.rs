//! `wss://` for relay-load: a rustls client driven by the same non-blocking mio loop. The rest
//! of the generator sees plaintext through `send`, `recv` and `flush`, which behave like a
//! non-blocking socket's `write` and `read` (`WouldBlock` when the socket would block).
//! Plain `ws://` connections never come here.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// The client configuration: trust the certificates in `ca` (for example the server's
/// `camrelay-self-signed.pem`), or with `insecure` any certificate at all (loopback benchmarks).
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let config = if insecure {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let ca = ca.ok_or("a wss:// URL needs --ca PATH (a PEM certificate to trust) or --insecure")?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {}: no certificate in it", ca.display()));
        }
        ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name the certificate must carry: an IP address or a DNS name, from `host:port`.
pub fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: not a TLS server name: {e}"))
}

pub fn connect(config: &Arc<ClientConfig>, name: &ServerName<'static>) -> io::Result<Box<ClientConnection>> {
    ClientConnection::new(config.clone(), name.clone()).map(Box::new).map_err(io::Error::other)
}

/// Writes pending TLS records; `Ok(false)` when the socket would block with some left.
pub fn flush(sock: &mut TcpStream, tls: &mut ClientConnection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Like a non-blocking `write` of plaintext: takes what rustls buffers (records are written
/// out at once as far as the socket takes them); `WouldBlock` while earlier records are stuck.
pub fn send(sock: &mut TcpStream, tls: &mut ClientConnection, data: &[u8]) -> io::Result<usize> {
    if !flush(sock, tls)? {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let n = tls.writer().write(data)?;
    flush(sock, tls)?;
    if n == 0 && !data.is_empty() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

/// Like a non-blocking `read` of plaintext: `Ok(0)` at the end of the stream (with or without
/// `close_notify`), `WouldBlock` when no whole record is waiting.
pub fn recv(sock: &mut TcpStream, tls: &mut ClientConnection, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // Decrypted bytes first: rustls refuses to read more while its plaintext buffer is full.
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        match tls.read_tls(sock) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        if let Err(e) = tls.process_new_packets() {
            // Sends the alert, as far as it goes.
            let _ = flush(sock, tls);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Handshake messages and key updates go out as soon as they exist.
        flush(sock, tls)?;
    }
}

/// Accepts any certificate (`--insecure`); signatures are still checked, so the handshake is
/// the real one and costs what it costs.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
