//! nginx from the distribution as the static web server that publishes the
//! revocation list (and the test OIDC issuer's JWKS, `oidc.rs`, as
//! `application/json`): a private config, prefix and free loopback port, in the
//! foreground (`daemon off`), stopped by its master's PID (its workers with
//! it). As root, the workers run as `www-data`, so the served tree is kept
//! world-readable (see [`WebRoot`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http_get, read_text, signal, wait_until};

const T: Duration = Duration::from_secs(10);

/// A world-readable temporary tree for nginx: `www/` (served), `staging/`
/// (beside it, on the same filesystem, for atomic replaces), and nginx's
/// own files.
pub struct WebRoot {
    dir: tempfile::TempDir,
}

impl WebRoot {
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("ztssh-www-")
            .tempdir()
            .expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        for d in ["www", "staging"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("web dirs");
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The served copy of the list.
    pub fn served(&self) -> PathBuf {
        self.path().join("www/crl.pem")
    }

    /// Where the next list is written before it is renamed over
    /// [`WebRoot::served`].
    pub fn staging(&self) -> PathBuf {
        self.path().join("staging/crl.pem")
    }
}

impl Default for WebRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// A running nginx; dropping it stops it.
pub struct Nginx {
    pub port: u16,
    access_log: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Serves `web`'s `www/` on a free loopback port, logging every
    /// request as `$msec $status $args $body_bytes_sent`.
    pub fn start(web: &WebRoot) -> Self {
        let me = Self::start_empty(web);
        wait_until(T, "nginx to serve the list", || {
            http_get(me.port, "/crl.pem").starts_with("HTTP/1.1 200")
        });
        me
    }

    /// Same, returning once nginx answers, with or without a list there.
    pub fn start_empty(web: &WebRoot) -> Self {
        Self::start_empty_on(web, free_port())
    }

    /// [`Nginx::start`] on `port` (the port an nginx stopped with
    /// [`Nginx::stop`] had, say: its clients' URLs stay right).
    pub fn start_on(web: &WebRoot, port: u16) -> Self {
        let me = Self::start_empty_on(web, port);
        wait_until(T, "nginx to serve the list", || {
            http_get(me.port, "/crl.pem").starts_with("HTTP/1.1 200")
        });
        me
    }

    fn start_empty_on(web: &WebRoot, port: u16) -> Self {
        let dir = web.path();
        let root = dir.join("www");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let access_log = logs.join("access.log");
        let d = dir.display();
        // As root, the master drops its workers to www-data (the user
        // Debian's package runs them as); the served tree is world-readable.
        let root_user = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").expect("/proc/self"),
        ) == 0;
        let user = if root_user {
            "user www-data www-data;"
        } else {
            ""
        };
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}\n\
             pid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               log_format fleet '$msec $status $args $body_bytes_sent';\n\
               access_log {d}/logs/access.log fleet;\n\
               default_type application/x-pem-file;\n\
               client_body_temp_path {d}/tmp/body;\n\
               proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fastcgi;\n\
               uwsgi_temp_path {d}/tmp/uwsgi;\n\
               scgi_temp_path {d}/tmp/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {};\n\
                 location = /crl.pem {{ }}\n\
                 location = /jwks.json {{ default_type application/json; }}\n\
               }}\n\
             }}\n",
            root.display()
        );
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| Command::new(p).arg("-v").output().is_ok())
            .expect("nginx is missing: run tests/setup-deps.sh");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(logs.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut me = Self {
            port,
            access_log,
            child: Some(child),
        };
        wait_until(T, "nginx to listen", || {
            if let Some(Ok(Some(s))) = me.child.as_mut().map(Child::try_wait) {
                panic!("nginx exited ({s}): {}", read_text(&logs.join("error.log")));
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        me
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The list's URL, with `query` (to tell clients apart in the log).
    pub fn url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/crl.pem?{query}", self.port)
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(children_of(self.pid()));
        v
    }

    /// Access-log lines: (wall time, status, query).
    pub fn requests(&self) -> Vec<(f64, u16, String)> {
        read_text(&self.access_log)
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                    f.next()?.to_owned(),
                ))
            })
            .collect()
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let text = read_text(Path::new(&format!("/proc/{pid}/task/{pid}/children")));
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Nginx {
    /// Stops nginx (master by PID, SIGTERM; its workers with it, or by
    /// PID with SIGKILL after 10 s). Stopping twice does nothing.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = children_of(child.id());
        // Fast shutdown (SIGTERM): the master stops its workers and exits.
        signal(child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < T {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        for w in workers {
            signal(w, "KILL");
        }
    }
}
