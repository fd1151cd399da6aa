//! A private `redis-server` for `evstream demo` and `bench` when no Redis is given: its own
//! temporary directory, a free loopback port, AOF on (`appendfsync everysec`), `noeviction`
//! and a 4 GB `maxmemory` (so the ops loop's memory thresholds mean something). It answers
//! `PING` before [`LocalRedis::start`] returns and is killed, its directory removed, on drop.
//!
//! Written for these two commands only: the tests' launcher (kill and restart, TLS, Sentinel,
//! faults) is `evstream-testkit`, which the release binary does not carry.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer `PING` after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private server; killed on drop.
#[derive(Debug)]
pub(crate) struct LocalRedis {
    port: u16,
    /// Data directory (AOF, log, the demo's journal); removed on drop, after the kill.
    dir: tempfile::TempDir,
    child: Child,
}

impl LocalRedis {
    /// Starts the server and waits until it answers.
    pub(crate) fn start() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("evstream-redis-")
            .tempdir()?;
        // Someone else can take the free port between the probe and redis-server's bind:
        // try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = spawn(dir.path(), port)?;
            match wait_ready(&mut child, port, dir.path()) {
                Ok(()) => return Ok(Self { port, dir, child }),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The loopback port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""])
        .args(["--daemonize", "no"])
        .args(["--logfile", "redis.log"])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        // Refuse to start on a torn AOF rather than cut it.
        .args(["--aof-load-truncated", "no"])
        .args(["--maxmemory", "4gb", "--maxmemory-policy", "noeviction"])
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("redis.stdout"))?)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                io::Error::new(error.kind(), "redis-server not found on PATH")
            } else {
                error
            }
        })
}

fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(5).collect();
            return Err(io::Error::other(format!(
                "redis-server on port {port} exited at start ({status}); log tail: {}",
                tail.join(" | ")
            )));
        }
        // Refused while it is not listening yet, `-LOADING` while it reads the AOF.
        let pong = redis::Client::open(url.as_str())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
        match pong {
            Ok(reply) if reply == "PONG" => return Ok(()),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => {
                return Err(io::Error::other(format!(
                    "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}: \
                     {other:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_redis_answers_and_is_gone_after_drop() {
        let redis = LocalRedis::start().unwrap();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut connection)
            .unwrap();
        assert_eq!(policy[1], "noeviction");
        let aof: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query(&mut connection)
            .unwrap();
        assert_eq!(aof[1], "yes");
        let (port, dir) = (redis.port(), redis.dir().to_owned());
        drop(connection);
        drop(redis);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
