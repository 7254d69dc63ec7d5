//! A real HTTP (or HTTPS) receiver on loopback: what the agent's webhook,
//! Discord and Slack alerts are posted to in the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

pub struct HttpSink {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    scheme: &'static str,
}

/// Reads one request and answers 200; None when it was not one.
fn serve(mut stream: impl Read + Write) -> Option<Received> {
    let mut reader = BufReader::new(&mut stream);
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let path = request.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim().split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    drop(reader);
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.flush();
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

impl HttpSink {
    /// Listens on 127.0.0.1 on a free port, answering 200 to every POST.
    pub fn start() -> std::io::Result<Self> {
        Self::listen(None, 0)
    }

    /// The same on a given port: the receiver a shipped configuration
    /// names (`http://127.0.0.1:8080/memtrace`).
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        Self::listen(None, port)
    }

    /// The same over TLS, with this certificate chain and key (PEM), as a
    /// webhook behind a private CA is.
    pub fn start_tls(cert_pem: &Path, key_pem: &Path) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: rustls::pki_types::pem::Error| std::io::Error::other(e.to_string());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
            .map_err(bad)?
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        let key = PrivateKeyDer::from_pem_file(key_pem).map_err(bad)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(std::io::Error::other)?;
        Self::listen(Some(Arc::new(config)), 0)
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>, port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let received = match &tls {
                    None => serve(&stream),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        // A client that refuses the certificate ends here.
                        serve(rustls::StreamOwned::new(conn, stream))
                    }
                };
                if let (Some(r), Ok(mut g)) = (received, sink.lock()) {
                    g.push(r);
                }
            }
        });
        Ok(Self { port, got, scheme })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits for a request matching `pred`.
    #[track_caller]
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let trace = crate::run::WaitTrace::start(timeout);
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = self.all().into_iter().find(|r| pred(r)) {
                trace.end(true);
                return Some(r);
            }
            if Instant::now() > end {
                trace.end(false);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
