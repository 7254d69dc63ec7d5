//! Webhook addresses resolved ahead: a sink looks its host up when it
//! starts and again every few minutes while idle, on its own thread, so an
//! alert on a box going down needs no DNS (no resolv.conf, no resolver
//! thread, no network round trip) before it connects. A failed delivery
//! looks the host up again at once, in case it moved.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// ureq keeps at most this many addresses per lookup.
const MAX_ADDRS: usize = 16;
/// How long a lookup is trusted while nothing fails.
pub const REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Cached {
    /// `host:port` the addresses are for.
    key: String,
    addrs: Vec<SocketAddr>,
    at: Option<Instant>,
}

/// Addresses looked up ahead of time; ureq asks it instead of DNS.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    cached: Arc<Mutex<Cached>>,
}

/// `host:port` of a URL (the scheme's port when none is written).
fn host_port(uri: &Uri) -> Option<String> {
    let authority = uri.authority()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })?;
    let host = authority.host();
    // IPv6 literals keep their brackets for the lookup.
    Some(format!("{host}:{port}"))
}

impl Prepared {
    /// Looks `url` up now (blocking: call it on the sink's thread). An
    /// address that cannot be found is left to the delivery to report.
    pub fn refresh(&self, url: &str) -> Result<usize, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let key = host_port(&uri).ok_or("the URL names no host")?;
        let addrs: Vec<SocketAddr> = key
            .to_socket_addrs()
            .map_err(|e| format!("looking up {}: {e}", uri.host().unwrap_or("?")))?
            .collect();
        let n = addrs.len();
        if let Ok(mut c) = self.cached.lock() {
            *c = Cached {
                key,
                addrs,
                at: Some(Instant::now()),
            };
        }
        Ok(n)
    }

    /// Whether the lookup is older than [`REFRESH`] (or never succeeded).
    pub fn stale(&self) -> bool {
        self.cached
            .lock()
            .map_or(true, |c| c.at.is_none_or(|t| t.elapsed() >= REFRESH))
    }

    /// Forgets the addresses: the next delivery, or the next refresh,
    /// looks them up again.
    pub fn forget(&self) {
        if let Ok(mut c) = self.cached.lock() {
            c.at = None;
            c.addrs.clear();
        }
    }
}

impl Resolver for Prepared {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        let key = host_port(uri).ok_or(Error::HostNotFound)?;
        let mut out = self.empty();
        if let Ok(c) = self.cached.lock()
            && c.key == key
            && !c.addrs.is_empty()
        {
            for a in c.addrs.iter().take(MAX_ADDRS) {
                out.push(*a);
            }
            return Ok(out);
        }
        // Not looked up ahead (a redirect elsewhere, a failed lookup):
        // ureq's own resolver, with its timeout.
        ureq::unversioned::resolver::DefaultResolver::default().resolve(uri, config, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_lookup_made_ahead() {
        let p = Prepared::default();
        assert!(p.stale());
        assert_eq!(p.refresh("http://127.0.0.1:8080/hook"), Ok(1));
        assert!(!p.stale());
        let uri: Uri = "http://127.0.0.1:8080/other".parse().unwrap();
        let got = p
            .resolve(&uri, &Config::default(), NextTimeout::default())
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], "127.0.0.1:8080".parse().unwrap());
        // The scheme's port when none is written.
        assert_eq!(
            host_port(&"https://hooks.example/x".parse().unwrap()).as_deref(),
            Some("hooks.example:443")
        );
        p.forget();
        assert!(p.stale());
        assert!(p.refresh("not a url").is_err());
    }
}
