//! A TLS front for a mock upstream, so that the benchmark can measure what a streamed
//! generation pays against an HTTPS API: the daemon's TCP and TLS handshakes when it
//! opens a connection, and none when it reuses one.
//!
//! The certificate is self-signed and made at run time by the `openssl` command (no
//! certificate crate joins the dependency tree for a benchmark); the daemon trusts it
//! through `SSL_CERT_FILE`, which the platform verifier reads on Linux. The front
//! terminates TLS and copies bytes to the plain mock upstream, so the mock's scripts
//! serve HTTPS unchanged.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A running TLS front. Stops when dropped.
pub struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub base_url: String,
    /// The certificate in PEM, for the daemon's `SSL_CERT_FILE`.
    pub cert_file: PathBuf,
    /// TLS connections accepted so far: one per generation means none was reused.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `openssl` with `args` in `dir`, or panics saying what failed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the TLS benchmark needs the openssl command");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Starts a TLS front for the plain upstream at `upstream` (`http://127.0.0.1:<port>`).
pub async fn front(upstream: &str) -> TlsFront {
    let dir = tempfile::tempdir().expect("temp dir");
    // A leaf that is its own trust anchor: not a CA (webpki refuses a CA certificate as
    // a server's), valid for the loopback address the daemon dials.
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=provd-bench",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    openssl(
        dir.path(),
        &[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ],
    );
    openssl(
        dir.path(),
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ],
    );
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read what openssl wrote");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(read("cert.der"))],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read("key.der"))),
        )
        .expect("a usable certificate");
    // The mock upstream speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    let upstream = upstream
        .strip_prefix("http://")
        .expect("a plain upstream")
        .to_owned();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsFront {
        base_url: format!("https://127.0.0.1:{port}"),
        cert_file: dir.path().join("cert.pem"),
        accepted,
        _dir: dir,
        task,
    }
}
