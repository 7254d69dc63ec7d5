//! Prometheus text exposition, and the tiny HTTP endpoint that serves it.
//!
//! The agent renders the whole page once per tick into a string; the
//! endpoint only hands out the latest string, so a scrape never waits on,
//! or delays, the agent's loop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Builds one exposition page.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family: HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(l), number(v));
    }

    /// A histogram's samples: cumulative `buckets` as (upper bound, count),
    /// then +Inf, sum and count.
    pub fn histogram(
        &mut self,
        name: &str,
        l: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        for (le, n) in buckets {
            let mut with = l.to_vec();
            let le = number(*le);
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, *n as f64);
        }
        let mut with = l.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, count as f64);
        self.sample(&format!("{name}_sum"), l, sum);
        self.sample(&format!("{name}_count"), l, count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The latest page, shared with the endpoint.
pub type Page = Arc<Mutex<Arc<String>>>;

/// Binds the endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })
}

/// Serves `GET /metrics` (and `/`) from `page` until the task is dropped.
pub async fn serve(listener: TcpListener, page: Page) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut n = 0;
            // Read until the end of the request head, briefly.
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let response = if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
                let body = page.lock().map(|p| p.clone()).unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                )
            } else {
                let body = "not found: memtrace serves /metrics\n";
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_labels_and_histograms() {
        let mut e = Exposition::new();
        e.family("memtrace_x_total", "counter", "An example.");
        e.sample("memtrace_x_total", &[("cgroup", "/a\"b\\c\nd")], 3.0);
        e.sample("memtrace_y", &[], 0.25);
        e.histogram(
            "memtrace_h_seconds",
            &[("cgroup", "/a")],
            &[(0.001, 1), (0.01, 3)],
            4,
            0.5,
        );
        let text = e.finish();
        assert!(text.contains("# TYPE memtrace_x_total counter\n"));
        assert!(
            text.contains(r#"memtrace_x_total{cgroup="/a\"b\\c\nd"} 3"#),
            "{text}"
        );
        assert!(text.contains("memtrace_y 0.25\n"));
        assert!(
            text.contains(r#"memtrace_h_seconds_bucket{cgroup="/a",le="0.001"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_h_seconds_bucket{cgroup="/a",le="+Inf"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_h_seconds_count{cgroup="/a"} 4"#),
            "{text}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_the_latest_page_over_real_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page: Page = Arc::new(Mutex::new(Arc::new("memtrace_up 1\n".to_string())));
        tokio::spawn(serve(listener, page.clone()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let r = get("/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.ends_with("memtrace_up 1\n"), "{r}");
        *page.lock().unwrap() = Arc::new("memtrace_up 2\n".into());
        assert!(get("/").await.ends_with("memtrace_up 2\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    }
}
