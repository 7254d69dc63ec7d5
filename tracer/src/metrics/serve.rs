//! The tiny HTTP endpoint: `GET /metrics` hands out the latest page. The
//! agent renders the page once per tick; a scrape never waits on, or
//! delays, the agent's loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
