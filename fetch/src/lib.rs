//! A small HTTP/1.1 client for one URL, shared by the proxy (which polls
//! the revocation list) and the sidecar (which refreshes its copy): a
//! conditional GET (`If-None-Match`, `If-Modified-Since`) on a kept-alive
//! connection, one timeout over the whole fetch (name lookup, connect, TLS,
//! request and body), and a cap on the body. `https://` goes through rustls
//! on the ring provider, with the Mozilla roots built in or a CA file.
//! What the body means is the caller's business: it is checked under the
//! root by the callers, never here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Largest list body accepted: a list with the most serials the format
/// allows (a million), PEM-armoured, fits.
pub const MAX_LIST_BYTES: usize = 24 << 20;

/// Where to fetch from and how; checked when built.
#[derive(Debug)]
pub struct Target {
    /// The URL.
    pub url: Uri,
    /// Time one fetch may take.
    pub timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Checks `text` (an `http://` or `https://` URL with a host) and, for
    /// https, builds the TLS configuration from `ca_file` (a PEM bundle) or
    /// the built-in roots. `what` names the setting in errors.
    pub fn new(
        what: &str,
        text: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let url: Uri = text
            .parse()
            .map_err(|e| format!("{what} = {text:?} is not a URL: {e}"))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "{what} = {text:?}: use an http:// or https:// URL \
                     (plain http is fine: the list is signed by the root)"
                ));
            }
        };
        if url.host().is_none_or(str::is_empty) {
            return Err(format!("{what} = {text:?} has no host"));
        }
        let tls = match (ca_file, https) {
            (Some(_), false) => {
                return Err(format!(
                    "revocation_ca_file only applies to an https:// {what}, not {text:?}"
                ));
            }
            (ca, true) => Some(tls_config(ca)?),
            (None, false) => None,
        };
        Ok(Self { url, timeout, tls })
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad =
                |e: &dyn std::fmt::Display| format!("revocation_ca_file {}: {e}", path.display());
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no CERTIFICATE in it"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for revocation_url: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// What one fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the list is unchanged.
    NotModified,
    /// 200 with this body.
    Body(Bytes),
}

/// A kept-alive connection; its driving task ends with it.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 client for one URL, with the validators of the last 200.
pub struct Fetcher {
    target: Arc<Target>,
    conn: Option<Conn>,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}

impl Fetcher {
    /// A client for `target.url`.
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            conn: None,
            etag: None,
            last_modified: None,
        }
    }

    /// One conditional GET, bounded by the fetch timeout as a whole
    /// (name lookup, connect, TLS, request and body).
    pub async fn fetch(&mut self) -> Result<Fetched, String> {
        let limit = self.target.timeout;
        match tokio::time::timeout(limit, self.attempt()).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(format!("no complete answer within {}s", limit.as_secs()))
            }
        }
    }

    async fn attempt(&mut self) -> Result<Fetched, String> {
        // A kept-alive connection the server closed meanwhile fails at
        // once: one more try on a fresh connection.
        if let Some(c) = self.conn.take().filter(|c| !c.sender.is_closed())
            && let Ok(r) = self.exchange(c).await
        {
            return Ok(r);
        }
        let c = self.connect().await?;
        self.exchange(c).await
    }

    async fn connect(&self) -> Result<Conn, String> {
        let url = &self.target.url;
        let host = url
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url
            .port_u16()
            .unwrap_or(if self.target.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host} port {port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.target.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{host}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }

    fn request(&self) -> Result<hyper::Request<Empty<Bytes>>, String> {
        let url = &self.target.url;
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let host = url.authority().map_or("", |a| a.as_str());
        let mut req = hyper::Request::get(path)
            .header(header::HOST, host)
            .header(
                header::USER_AGENT,
                concat!("ztssh-proxy/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/x-pem-file, */*");
        if let Some(e) = &self.etag {
            req = req.header(header::IF_NONE_MATCH, e.clone());
        }
        if let Some(m) = &self.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, m.clone());
        }
        req.body(Empty::new()).map_err(|e| e.to_string())
    }

    async fn exchange(&mut self, mut c: Conn) -> Result<Fetched, String> {
        c.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let resp = c
            .sender
            .send_request(self.request()?)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = resp.into_parts();
        if !matches!(parts.status, StatusCode::OK | StatusCode::NOT_MODIFIED) {
            // The connection is dropped with the unread body.
            return Err(format!("the server answered HTTP {}", parts.status));
        }
        let body = Limited::new(body, MAX_LIST_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    format!("the body is larger than the {MAX_LIST_BYTES}-byte cap")
                } else {
                    format!("reading the body failed: {e}")
                }
            })?
            .to_bytes();
        self.conn = Some(c);
        if parts.status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if fresh_write(&parts.headers) {
            // The file may change again within this second without
            // changing its validators: ask without them next time.
            self.etag = None;
            self.last_modified = None;
        } else {
            self.etag = parts.headers.get(header::ETAG).cloned();
            self.last_modified = parts.headers.get(header::LAST_MODIFIED).cloned();
        }
        Ok(Fetched::Body(body))
    }
}

/// Whether a 200's validators may miss the next change: its
/// `Last-Modified` is not at least one second before its `Date` (RFC 9110
/// §8.8.2.2: such a date is a weak validator). Static servers derive both
/// validators from the file's modification time in whole seconds (nginx's
/// `ETag` is mtime-size), so a list replaced twice within one second by one
/// of the same size would keep them, and a conditional GET would get a 304
/// for the newer list. A response without both dates keeps its validators
/// (an `ETag` from the content's hash, say).
fn fresh_write(headers: &hyper::HeaderMap) -> bool {
    let date = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (date(header::LAST_MODIFIED), date(header::DATE)) {
        (Some(modified), Some(served)) => modified >= served,
        _ => false,
    }
}

async fn handshake<T>(io: T) -> Result<Conn, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    })
    .abort_handle();
    Ok(Conn { sender, task })
}

impl Fetcher {
    /// Starts from validators kept from an earlier run (the sidecar keeps
    /// the `ETag` beside its copy of the list).
    pub fn with_etag(mut self, etag: Option<&str>) -> Self {
        self.etag = etag.and_then(|e| HeaderValue::from_str(e).ok());
        self
    }

    /// The `ETag` of the last 200, if it had one.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_ref().and_then(|e| e.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn headers(modified: Option<SystemTime>, served: Option<SystemTime>) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"6b10486a-5\""));
        for (name, t) in [(header::LAST_MODIFIED, modified), (header::DATE, served)] {
            if let Some(t) = t {
                let v = HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("date");
                h.insert(name, v);
            }
        }
        h
    }

    #[test]
    fn validators_of_a_file_written_in_the_second_it_was_served_are_not_kept() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let second = Duration::from_secs(1);
        // Modified in the second it was served (or a clock ahead): weak.
        assert!(fresh_write(&headers(Some(now), Some(now))));
        assert!(fresh_write(&headers(
            Some(now + Duration::from_millis(900)),
            Some(now)
        )));
        assert!(fresh_write(&headers(Some(now + second), Some(now))));
        // A second or more before: the validators hold.
        assert!(!fresh_write(&headers(Some(now - second), Some(now))));
        // Without both dates there is nothing to compare: keep the ETag.
        assert!(!fresh_write(&headers(None, Some(now))));
        assert!(!fresh_write(&headers(Some(now), None)));
        assert!(!fresh_write(&headers(None, None)));
        let mut garbage = headers(Some(now), None);
        garbage.insert(header::DATE, HeaderValue::from_static("yesterday"));
        assert!(!fresh_write(&garbage));
    }
}
