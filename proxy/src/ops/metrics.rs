//! Prometheus metrics and the `/metrics`, `/healthz` and `/readyz`
//! endpoint (hyper), served on a separate address, off unless
//! `metrics_listen` is set.
//!
//! `/healthz` is liveness: 200 while the process serves. `/readyz` is
//! readiness: 200 only when the licence is valid, the revocation list is
//! fresh under the staleness policy (both judged by `ztssh_proto::trust`,
//! through [`Authority::not_ready`]) and sshd accepts a TCP connection
//! ([`UpstreamProbe`]); otherwise 503 with one line per failing check.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tracing::{debug, warn};

use crate::trust::authority::Authority;

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// Sessions currently spliced to sshd.
    pub sessions_open: IntGauge,
    /// Sessions spliced to sshd since start.
    pub sessions_total: IntCounter,
    /// Log lines dropped because stderr did not take them in time.
    pub log_lines_dropped: IntCounter,
    /// Handshakes by result.
    pub handshakes: IntCounterVec,
    /// Challenges by result.
    pub challenges: IntCounterVec,
    /// Proof verification time.
    pub proof_seconds: Histogram,
    /// Session ends by reason.
    pub terminations: IntCounterVec,
    /// Tunnel payload bytes by direction (`in` = client to sshd).
    pub bytes: IntCounterVec,
    /// Connections refused before the handshake, by reason.
    pub refused: IntCounterVec,
    /// Client certificates by kind (issued, renewed).
    pub certificates: IntCounterVec,
    /// Reloads by result.
    pub reloads: IntCounterVec,
    /// Requests on the authorized-keys socket, by result.
    pub authorized_keys: IntCounterVec,
    /// Penalties that started or grew.
    pub penalties: IntCounter,
    /// Renewals refused as too early (the session went on).
    pub renewals_refused: IntCounter,
    /// Tunnel rekeys completed.
    pub rekeys: IntCounter,
    /// Handshakes in progress.
    pub handshakes_in_progress: IntGauge,
    /// Sources with a live penalty record.
    pub penalised_sources: IntGauge,
    /// Sources in the rate limiter's table.
    pub rate_limited_sources: IntGauge,
    /// Revocation list fetches by result (ok, not_modified, failed).
    pub crl_fetches: IntCounterVec,
    /// Lists refused for carrying the loaded version with other contents.
    pub crl_forked: IntCounter,
    /// Licence fetches from `licence_url` by result (ok, not_modified, failed).
    pub licence_fetches: IntCounterVec,
    /// User CA KRLs offered (read or fetched), by result.
    pub krl_loads: IntCounterVec,
    krl_version: IntGauge,
    licence_expiry: IntGauge,
    licence_lifetime: IntGauge,
    crl_expiry: IntGauge,
    crl_age: IntGauge,
    crl_version: IntGauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(v.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    v
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    g
}

impl Metrics {
    /// Creates and registers every metric. Panics only on a programming
    /// error in a metric name, at start-up.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let r = Registry::new();
        // Counted where the core refuses a token (the authority's hook).
        r.register(Box::new(crate::trust::workload::TOKENS_REFUSED.clone()))
            .unwrap_or_else(|e| panic!("register ztssh_workload_tokens_refused_total: {e}"));
        let sessions_total = counter(
            &r,
            "ztssh_sessions_total",
            "Sessions spliced to sshd since start.",
        );
        let penalties = counter(
            &r,
            "ztssh_source_penalties_total",
            "Times a source's penalty started or grew past the threshold.",
        );
        let renewals_refused = counter(
            &r,
            "ztssh_renewals_refused_total",
            "Renewals refused as too early; the session went on.",
        );
        let rekeys = counter(
            &r,
            "ztssh_rekeys_total",
            "Tunnel rekeys completed (both directions on new keys).",
        );
        let log_lines_dropped = counter(
            &r,
            "ztssh_log_lines_dropped_total",
            "Log lines dropped because stderr did not take them and the queue was full.",
        );
        let proof_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ztssh_proof_verify_seconds",
                "Time to verify one identity proof.",
            )
            .buckets(vec![
                20e-6, 40e-6, 60e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 0.05,
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        r.register(Box::new(proof_seconds.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "ztssh_build_info",
                "Always 1; the version label is the proxy's version.",
            ),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        r.register(Box::new(build_info.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            sessions_open: gauge(
                &r,
                "ztssh_sessions_open",
                "Sessions currently spliced to sshd.",
            ),
            sessions_total,
            log_lines_dropped,
            handshakes: counter_vec(
                &r,
                "ztssh_handshakes_total",
                "Handshakes by result.",
                "result",
            ),
            challenges: counter_vec(
                &r,
                "ztssh_challenges_total",
                "Identity challenges by result.",
                "result",
            ),
            proof_seconds,
            terminations: counter_vec(
                &r,
                "ztssh_sessions_terminated_total",
                "Sessions ended by the proxy, by reason.",
                "reason",
            ),
            bytes: counter_vec(
                &r,
                "ztssh_tunnel_bytes_total",
                "Tunnel payload bytes (in = client to sshd).",
                "direction",
            ),
            refused: counter_vec(
                &r,
                "ztssh_connections_refused_total",
                "Connections refused before the handshake.",
                "reason",
            ),
            certificates: counter_vec(
                &r,
                "ztssh_certificates_total",
                "Client certificates by kind.",
                "kind",
            ),
            reloads: counter_vec(
                &r,
                "ztssh_config_reloads_total",
                "Reloads by result.",
                "result",
            ),
            authorized_keys: counter_vec(
                &r,
                "ztssh_authorized_keys_requests_total",
                "sshd AuthorizedKeysCommand requests by result (answered, refused, forbidden, bad_request, busy).",
                "result",
            ),
            penalties,
            renewals_refused,
            rekeys,
            handshakes_in_progress: gauge(
                &r,
                "ztssh_handshakes_in_progress",
                "Connections still in the handshake.",
            ),
            penalised_sources: gauge(
                &r,
                "ztssh_penalised_sources",
                "Sources with a live penalty record.",
            ),
            rate_limited_sources: gauge(
                &r,
                "ztssh_rate_limiter_sources",
                "Sources tracked by the per-source rate limiter.",
            ),
            crl_fetches: counter_vec(
                &r,
                "ztssh_crl_fetches_total",
                "Revocation list fetches from revocation_url by result (ok, not_modified, failed).",
                "result",
            ),
            crl_forked: counter(
                &r,
                "ztssh_crl_forked_total",
                "Revocation lists refused for carrying the loaded list's version with other contents (two lists signed under one version).",
            ),
            licence_fetches: counter_vec(
                &r,
                "ztssh_licence_fetches_total",
                "Licence fetches from licence_url by result (ok, not_modified, failed).",
                "result",
            ),
            licence_lifetime: gauge(
                &r,
                "ztssh_licence_lifetime_seconds",
                "Seconds from the licence's start to its end (or its delegation's, if sooner): \
                 with ztssh_licence_expiry_seconds, how much of it is left.",
            ),
            krl_loads: counter_vec(
                &r,
                "ztssh_user_ca_krl_loads_total",
                "User CA KRLs read or fetched, by result (ok, unchanged, same_version, rollback, invalid, fetch_failed).",
                "result",
            ),
            krl_version: gauge(
                &r,
                "ztssh_user_ca_krl_version",
                "krl_version of the user CA KRL in force (-1: none).",
            ),
            licence_expiry: gauge(
                &r,
                "ztssh_licence_expiry_seconds",
                "Seconds until the server licence expires (negative: expired).",
            ),
            crl_expiry: gauge(
                &r,
                "ztssh_crl_next_update_seconds",
                "Seconds until the revocation list is due for renewal (negative: stale).",
            ),
            crl_age: gauge(
                &r,
                "ztssh_crl_age_seconds",
                "Seconds since the loaded revocation list was signed (0: none).",
            ),
            crl_version: gauge(
                &r,
                "ztssh_crl_version",
                "Version of the loaded revocation list (0: none).",
            ),
            registry: r,
        }
    }

    fn refresh(&self, authority: &Authority, now: u64) {
        let secs =
            |t: u64| i64::try_from(t).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
        let licence = &authority.licence;
        self.licence_expiry.set(secs(licence.usable_until()));
        self.licence_lifetime.set(
            i64::try_from(
                licence
                    .usable_until()
                    .saturating_sub(licence.body.not_before),
            )
            .unwrap_or(i64::MAX),
        );
        self.krl_version.set(
            authority
                .krl
                .as_ref()
                .map_or(-1, |k| i64::try_from(k.krl_version).unwrap_or(i64::MAX)),
        );
        match &authority.crl {
            Some(c) => {
                self.crl_expiry.set(secs(c.next_update));
                self.crl_age.set(-secs(c.issued));
                self.crl_version
                    .set(i64::try_from(c.list_version).unwrap_or(i64::MAX));
            }
            None => {
                self.crl_version.set(0);
                self.crl_age.set(0);
            }
        }
    }

    /// The text exposition.
    pub fn render(&self, authority: &Authority, now: u64) -> String {
        self.refresh(authority, now);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(event = "metrics_encode_failed", error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The counters one session updates, looked up once when it starts.
pub struct SessionMetrics {
    /// Bytes delivered to sshd.
    pub bytes_in: IntCounter,
    /// Bytes read from sshd.
    pub bytes_out: IntCounter,
    /// Proofs verified.
    pub challenges_ok: IntCounter,
    /// Time to verify a proof.
    pub proof_seconds: Histogram,
    /// Certificates renewed.
    pub renewed: IntCounter,
    /// Renewals refused as too early.
    pub renewals_refused: IntCounter,
    /// Rekeys completed.
    pub rekeys: IntCounter,
}

impl Metrics {
    /// The counters for one session.
    pub fn session(&self) -> SessionMetrics {
        SessionMetrics {
            bytes_in: self.bytes.with_label_values(&["in"]),
            bytes_out: self.bytes.with_label_values(&["out"]),
            challenges_ok: self.challenges.with_label_values(&["ok"]),
            proof_seconds: self.proof_seconds.clone(),
            renewed: self.certificates.with_label_values(&["renewed"]),
            renewals_refused: self.renewals_refused.clone(),
            rekeys: self.rekeys.clone(),
        }
    }

    /// Counts a session's end.
    pub fn ended(&self, kind: ztssh_proto::end::EndKind) {
        self.terminations.with_label_values(&[kind.label()]).inc();
        if kind.is_challenge_failure() {
            self.challenges.with_label_values(&["failed"]).inc();
        }
    }
}

/// Most connections the metrics listener serves at once; one more is
/// closed as soon as it is accepted. A scraper needs one or two.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Longest a metrics connection may stay open.
const METRICS_CONNECTION_SECS: u64 = 10;

/// How long `/readyz` waits for sshd to accept a connection.
pub const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one answer of the sshd probe is reused, so that probes (from
/// several kubelets, say) cannot make the proxy hammer sshd.
pub const UPSTREAM_PROBE_CACHE: Duration = Duration::from_secs(2);

/// Whether sshd accepts a TCP connection: a bounded connect, closed at
/// once, whose answer is reused for [`UPSTREAM_PROBE_CACHE`]. Probes that
/// arrive while one connect is under way wait for its answer.
pub struct UpstreamProbe {
    addr: SocketAddr,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl UpstreamProbe {
    /// A probe of sshd at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            last: Mutex::new(None),
        }
    }

    /// `Err` says why sshd is not reachable.
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = &*last
            && at.elapsed() < UPSTREAM_PROBE_CACHE
        {
            return answer.clone();
        }
        let addr = self.addr;
        let answer =
            match tokio::time::timeout(UPSTREAM_PROBE_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("sshd at {addr} is not reachable: {e}")),
                Err(_) => Err(format!(
                    "sshd at {addr} did not accept a connection within {} ms",
                    UPSTREAM_PROBE_TIMEOUT.as_millis()
                )),
            };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    authority: watch::Receiver<Arc<Authority>>,
    upstream: Arc<UpstreamProbe>,
) {
    accept_capped(listener, METRICS_MAX_CONNECTIONS, move |sock| {
        let (metrics, authority, upstream) = (
            Arc::clone(&metrics),
            authority.clone(),
            Arc::clone(&upstream),
        );
        async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (metrics, authority, upstream) = (
                    Arc::clone(&metrics),
                    authority.clone(),
                    Arc::clone(&upstream),
                );
                let path = req.uri().path().to_owned();
                async move {
                    Ok::<_, Infallible>(respond(&path, &metrics, &authority, &upstream).await)
                }
            });
            let io = hyper_util::rt::TokioIo::new(sock);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            let _ = tokio::time::timeout(Duration::from_secs(METRICS_CONNECTION_SECS), conn).await;
        }
    })
    .await;
}

/// The body and status of `/readyz`: `ready` and 200, or one line per
/// failing check and 503.
async fn readiness(
    authority: &Authority,
    upstream: &UpstreamProbe,
    now: u64,
) -> (StatusCode, String) {
    let mut why = authority.not_ready(now);
    if let Err(e) = upstream.check().await {
        why.push(e);
    }
    if why.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = String::new();
    for line in why {
        body.push_str(&line);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Accepts connections and runs `serve_one` on each, at most `cap` at
/// once: a connection beyond the cap is closed as soon as it is accepted,
/// so idle sockets cannot pile up tasks and descriptors. A failed accept
/// (out of descriptors, say) backs off, from 10 ms doubling to 1 s, instead
/// of spinning on the error.
pub async fn accept_capped<F, Fut>(listener: TcpListener, cap: usize, serve_one: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    let slots = Arc::new(Semaphore::new(cap));
    let mut backoff = FIRST_BACKOFF;
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff = FIRST_BACKOFF;
                sock
            }
            Err(e) => {
                if backoff == FIRST_BACKOFF {
                    warn!(event = "accept_failed", listener = "metrics", error = %e, "accept failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(
                event = "metrics_refused",
                cap, "metrics listener at its connection cap; closed a connection"
            );
            drop(sock);
            continue;
        };
        let fut = serve_one(sock);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}

async fn respond(
    path: &str,
    metrics: &Metrics,
    authority: &watch::Receiver<Arc<Authority>>,
    upstream: &UpstreamProbe,
) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match path {
        "/metrics" => {
            let a = authority.borrow().clone();
            (
                StatusCode::OK,
                metrics.render(&a, crate::ops::clock::unix()),
                "text/plain; version=0.0.4",
            )
        }
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/readyz" => {
            let a = authority.borrow().clone();
            let (status, body) = readiness(&a, upstream, crate::ops::clock::unix()).await;
            (status, body, "text/plain")
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    async fn wait(rx: &mut mpsc::UnboundedReceiver<&'static str>) -> Option<&'static str> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
    }

    /// Each served connection reports when it starts and when its client
    /// has gone; it is held until then.
    #[test]
    fn the_metrics_listener_closes_connections_past_its_cap() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
            tokio::spawn(accept_capped(listener, 2, move |mut sock| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send("served");
                    let mut b = [0u8; 1];
                    while matches!(sock.read(&mut b).await, Ok(n) if n > 0) {}
                    let _ = tx.send("done");
                }
            }));
            let a = TcpStream::connect(addr).await.expect("a");
            assert_eq!(wait(&mut rx).await, Some("served"));
            let _b = TcpStream::connect(addr).await.expect("b");
            assert_eq!(wait(&mut rx).await, Some("served"));
            // The third is closed at accept: it reads end of file.
            let mut c = TcpStream::connect(addr).await.expect("c");
            let mut buf = [0u8; 1];
            let got = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                .await
                .expect("the connection past the cap was not closed");
            assert!(matches!(got, Ok(0)) || got.is_err(), "{got:?}");
            // Once one is released, the next is served.
            drop(a);
            assert_eq!(wait(&mut rx).await, Some("done"));
            let _d = TcpStream::connect(addr).await.expect("d");
            assert_eq!(wait(&mut rx).await, Some("served"));
        });
    }
}
