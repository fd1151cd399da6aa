//! A Redis Sentinel deployment on loopback: a primary, a replica, and three sentinels that
//! fail over after one second of silence.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, resp, RedisServer, Reply};

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "evstream-master";

/// A primary, its replicas, and three sentinels (quorum 2, `down-after-milliseconds` 1000,
/// `failover-timeout` 3000). Everything is killed on drop.
#[derive(Debug)]
pub struct SentinelSet {
    /// The servers, the initial primary first.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

#[derive(Debug)]
struct SentinelProcess {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelSet {
    /// A primary with one replica; see [`start_with`](Self::start_with).
    pub fn start() -> io::Result<Self> {
        Self::start_with(1)
    }

    /// Starts the primary and `replicas` replicas (synced), then the sentinels, and waits
    /// until every sentinel knows the replicas and the other sentinels. With two replicas,
    /// the promoted one still has a replica after a failover (for `WAIT`).
    pub fn start_with(replicas: usize) -> io::Result<Self> {
        let primary = RedisServer::start()?;
        let mut servers = vec![];
        for _ in 0..replicas {
            let replica = RedisServer::start()?;
            expect_ok(replica.command(&[
                "REPLICAOF",
                "127.0.0.1",
                &primary.port().to_string(),
            ])?)?;
            wait_until("a replica to sync", Duration::from_secs(30), || {
                Ok(
                    info_field(&replica, "replication", "master_link_status")?.as_deref()
                        == Some("up"),
                )
            })?;
            servers.push(replica);
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(SentinelProcess::start(primary.port())?);
        }
        servers.insert(0, primary);
        let set = Self { servers, sentinels };
        wait_until(
            "the sentinels to find each other and the replica",
            Duration::from_secs(30),
            || {
                for sentinel in &set.sentinels {
                    let master =
                        sentinel_command(sentinel.port, &["SENTINEL", "MASTER", MASTER_NAME])?;
                    let fields = pairs(&master);
                    let count = |name: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == name)
                            .and_then(|(_, v)| v.parse::<u32>().ok())
                    };
                    if count("num-slaves") != Some(replicas as u32)
                        || count("num-other-sentinels") != Some(2)
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<MASTER_NAME>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The port the sentinels name as the master now.
    pub fn master_port(&self) -> io::Result<u16> {
        let reply = sentinel_command(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        )?;
        match reply {
            Reply::Array(Some(items)) => match items.get(1) {
                Some(Reply::Bulk(Some(port))) => String::from_utf8_lossy(port)
                    .parse()
                    .map_err(|_| io::Error::other("the sentinel's port is not a number")),
                _ => Err(io::Error::other(format!("unexpected reply {items:?}"))),
            },
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Sets `down-after-milliseconds` on every sentinel: how long the master must be silent
    /// before a failover starts (1000 at start).
    pub fn set_down_after(&self, milliseconds: u64) -> io::Result<()> {
        for sentinel in &self.sentinels {
            let reply = sentinel_command(
                sentinel.port,
                &[
                    "SENTINEL",
                    "SET",
                    MASTER_NAME,
                    "down-after-milliseconds",
                    &milliseconds.to_string(),
                ],
            )?;
            expect_ok(reply)?;
        }
        Ok(())
    }

    /// The server the sentinels name as the master now.
    pub fn master(&mut self) -> io::Result<&mut RedisServer> {
        let port = self.master_port()?;
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .ok_or_else(|| io::Error::other(format!("no server of this set on port {port}")))
    }
}

impl SentinelProcess {
    fn start(primary_port: u16) -> io::Result<Self> {
        let mut dir = tempfile::Builder::new()
            .prefix("evstream-sentinel-")
            .tempdir()?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let config = dir.path().join("sentinel.conf");
            let mut file = File::create(&config)?;
            writeln!(file, "port {port}")?;
            writeln!(file, "bind 127.0.0.1")?;
            writeln!(file, "dir {}", dir.path().display())?;
            writeln!(file, "logfile sentinel.log")?;
            writeln!(
                file,
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2"
            )?;
            writeln!(file, "sentinel down-after-milliseconds {MASTER_NAME} 1000")?;
            writeln!(file, "sentinel failover-timeout {MASTER_NAME} 3000")?;
            writeln!(file, "sentinel parallel-syncs {MASTER_NAME} 1")?;
            drop(file);
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?;
            let mut sentinel = Self { port, dir, child };
            let ready = wait_until("a sentinel to answer", Duration::from_secs(10), || {
                Ok(matches!(sentinel_command(port, &["PING"]), Ok(Reply::Status(s)) if s == "PONG"))
            });
            match ready {
                Ok(()) => return Ok(sentinel),
                Err(error) => {
                    last_error = Some(error);
                    let _ = sentinel.child.kill();
                    let _ = sentinel.child.wait();
                    let placeholder = tempfile::TempDir::new()?;
                    dir = std::mem::replace(&mut sentinel.dir, placeholder);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server --sentinel did not start")))
    }
}

fn sentinel_command(port: u16, args: &[&str]) -> io::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    resp::write_command(&mut writer, args)?;
    writer.flush()?;
    resp::read_reply(&mut reader)
}

fn expect_ok(reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Status(_) => Ok(()),
        other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
    }
}

/// A flat `[name, value, …]` reply as pairs.
fn pairs(reply: &Reply) -> Vec<(String, String)> {
    let Reply::Array(Some(items)) = reply else {
        return Vec::new();
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Reply::Status(s) => s.clone(),
        Reply::Int(i) => i.to_string(),
        _ => String::new(),
    };
    items
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect()
}

/// One `field:value` of `INFO <section>`.
fn info_field(server: &RedisServer, section: &str, field: &str) -> io::Result<Option<String>> {
    let Reply::Bulk(Some(text)) = server.command(&["INFO", section])? else {
        return Ok(None);
    };
    Ok(BufReader::new(&text[..])
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        }))
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match condition() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last = Some(error),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "timed out after {timeout:?} waiting for {what} (last error: {last:?})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
