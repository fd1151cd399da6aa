//! Test support for evstream: private `redis-server` processes on free loopback ports, a
//! fault-injecting TCP proxy ([`FaultProxy`]) to put between a client and one, and plain
//! HTTP helpers ([`http_get`], [`WebhookSink`]).
//!
//! Tests never touch a Redis they did not start. A [`RedisServer`] runs in its own temporary
//! directory, answers before [`RedisServer::start`] returns, can be killed with SIGKILL and
//! restarted on the same port and data directory, and is killed when dropped.
//!
//! ```no_run
//! use evstream_testkit::{RedisServer, Reply};
//!
//! let mut redis = RedisServer::builder().aof(true).start()?;
//! redis.command(&["SET", "k", "v"])?;
//! redis.kill()?;
//! redis.restart()?;
//! assert_eq!(redis.command(&["GET", "k"])?, Reply::Bulk(Some(b"v".to_vec())));
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cluster;
mod http;
mod proxy;
mod resp;
mod sentinel;
mod tls;

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use cluster::ClusterSet;
pub use http::{http_get, http_get_with_token, read_request_body, WebhookSink};
pub use proxy::FaultProxy;
pub use resp::Reply;
pub use sentinel::{SentinelSet, MASTER_NAME};
pub use tls::write as write_certificates;

/// How long a server may take to answer `PING` after start (AOF loading included).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a private server. Build with [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    aof: bool,
    appendfsync: Option<String>,
    maxmemory: Option<String>,
    maxmemory_policy: Option<String>,
    password: Option<String>,
    /// TLS on a second port; `Some(true)` also requires client certificates.
    tls: Option<bool>,
    extra: Vec<String>,
}

impl RedisServerBuilder {
    /// Turns the append-only file on (`appendfsync always`, so a SIGKILL loses no
    /// acknowledged write, unless [`appendfsync`](Self::appendfsync) says otherwise).
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    /// Sets `appendfsync` (`always`, `everysec`, `no`).
    pub fn appendfsync(mut self, policy: &str) -> Self {
        self.appendfsync = Some(policy.to_owned());
        self
    }

    /// Sets `maxmemory`, e.g. `"64mb"`.
    pub fn maxmemory(mut self, limit: &str) -> Self {
        self.maxmemory = Some(limit.to_owned());
        self
    }

    /// Sets `maxmemory-policy`, e.g. `"noeviction"`.
    pub fn maxmemory_policy(mut self, policy: &str) -> Self {
        self.maxmemory_policy = Some(policy.to_owned());
        self
    }

    /// Requires this password (`requirepass`).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Also serves TLS on a second port ([`RedisServer::tls_url`]) with certificates made
    /// for this server ([`RedisServer::tls_file`]: `ca.pem`, `client.pem`, `client-key.pem`);
    /// `require_client_cert` turns on mutual TLS. The plain port stays for set-up.
    pub fn tls(mut self, require_client_cert: bool) -> Self {
        self.tls = Some(require_client_cert);
        self
    }

    /// Adds a raw `--name value` option.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.extra.push(format!("--{name}"));
        self.extra.push(value.to_owned());
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> io::Result<RedisServer> {
        let mut dir = tempfile::Builder::new()
            .prefix("evstream-redis-")
            .tempdir()?;
        // A free port can be taken by someone else between our probe and redis-server's bind;
        // try a few.
        if self.tls.is_some() {
            tls::write(dir.path(), "evstream test CA")?;
        }
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let tls_port = match self.tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let mut server = RedisServer {
                options: self.clone(),
                port,
                tls_port,
                dir,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => {
                    last_error = Some(error);
                    dir = server.into_dir();
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }
}

/// A private `redis-server` process, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    options: RedisServerBuilder,
    port: u16,
    tls_port: Option<u16>,
    /// Data directory (AOF, RDB, log); removed on drop.
    dir: tempfile::TempDir,
    /// `None` while killed.
    child: Option<Child>,
}

impl RedisServer {
    /// A builder with defaults: no persistence, no limits, no password.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `rediss://127.0.0.1:<tls port>`, for a server built with
    /// [`tls`](RedisServerBuilder::tls).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}"))
    }

    /// A certificate file of a TLS server: `ca.pem`, `client.pem`, `client-key.pem` (and the
    /// server's own).
    pub fn tls_file(&self, name: &str) -> std::path::PathBuf {
        debug_assert!(tls::FILES.contains(&name), "unknown TLS file {name}");
        self.dir.path().join(name)
    }

    /// Starts a server with default options.
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `redis://` URL for clients, with the password if one is set.
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Whether the process is running (not killed or stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL (no shutdown, no final save) and waits for it to exit.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory, and waits until it
    /// answers (with AOF on, after it has loaded the data). Kills it first if it is running.
    ///
    /// With AOF on, it first repairs the AOF with `redis-check-aof --fix`, as a correct
    /// deployment does before starting Redis after a crash (see `docs/deployment.md`): Redis
    /// 7.0's own `aof-load-truncated` cuts a write torn by the crash inside a `MULTI` block
    /// after the last whole command, leaving the block open, and the next restart then
    /// applies those never-acknowledged writes. `redis-check-aof` cuts before the `MULTI`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        if self.options.aof {
            self.repair_aof()?;
        }
        // The port was just freed by our own process; retry briefly in case it lingers.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends one command over a fresh connection and returns the reply (authenticating first
    /// if a password is set). For test set-up and checks; not a client library.
    pub fn command(&self, args: &[&str]) -> io::Result<Reply> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(password) = &self.options.password {
            resp::write_command(&mut writer, &["AUTH", password])?;
            if let Reply::Error(e) = resp::read_reply(&mut reader)? {
                return Err(io::Error::other(format!("AUTH refused: {e}")));
            }
        }
        resp::write_command(&mut writer, args)?;
        writer.flush()?;
        resp::read_reply(&mut reader)
    }

    fn repair_aof(&self) -> io::Result<()> {
        let manifest = self
            .dir
            .path()
            .join("appendonlydir")
            .join("appendonly.aof.manifest");
        if !manifest.exists() {
            return Ok(());
        }
        let mut child = Command::new("redis-check-aof")
            .arg("--fix")
            .arg(&manifest)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run redis-check-aof (Debian package redis-tools): {error}"),
                )
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // It asks before truncating.
            stdin.write_all(b"y\n")?;
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "redis-check-aof --fix failed on {}: {status}",
                manifest.display()
            )));
        }
        Ok(())
    }

    fn spawn(&mut self) -> io::Result<()> {
        let options = &self.options;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--logfile", "redis.log"])
            .args(["--appendonly", if options.aof { "yes" } else { "no" }]);
        if options.aof {
            let fsync = options.appendfsync.as_deref().unwrap_or("always");
            // Refuse to start on a torn AOF rather than repair it badly (see `restart`).
            command.args(["--appendfsync", fsync, "--aof-load-truncated", "no"]);
        }
        if let Some(limit) = &options.maxmemory {
            command.args(["--maxmemory", limit]);
        }
        if let Some(policy) = &options.maxmemory_policy {
            command.args(["--maxmemory-policy", policy]);
        }
        if let Some(password) = &options.password {
            command.args(["--requirepass", password]);
        }
        if let (Some(require_client_cert), Some(port)) = (options.tls, self.tls_port) {
            let dir = self.dir.path();
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server-key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem"))
                .args([
                    "--tls-auth-clients",
                    if require_client_cert { "yes" } else { "no" },
                ]);
        }
        command.args(&options.extra);
        let stdout = File::create(self.dir.path().join("redis.stdout"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        error.kind(),
                        "redis-server not found on PATH: install it (Debian: apt-get install \
                         redis-server), or run scripts/test.sh, which does",
                    )
                } else {
                    error
                }
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(5).collect();
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited at start; log tail: {}",
                    self.port,
                    tail.join(" | ")
                )));
            }
            match self.command(&["PING"]) {
                Ok(Reply::Status(status)) if status == "PONG" => return Ok(()),
                // Refused (not listening yet), or `-LOADING` while the AOF is read.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => {
                    return Err(io::Error::other(format!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}: \
                         {other:?}",
                        self.port
                    )))
                }
            }
        }
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.kill();
        let placeholder = tempfile::TempDir::new().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
