//! The testkit against real `redis-server` processes.
use evstream_testkit::{RedisServer, Reply};

fn config_get(redis: &RedisServer, name: &str) -> String {
    match redis.command(&["CONFIG", "GET", name]).unwrap() {
        Reply::Array(Some(items)) => items[1].as_text().unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn starts_answers_and_applies_options() {
    let redis = RedisServer::builder()
        .maxmemory("64mb")
        .maxmemory_policy("noeviction")
        .start()
        .unwrap();
    assert_eq!(
        redis.command(&["PING"]).unwrap(),
        Reply::Status("PONG".into())
    );
    assert_eq!(
        config_get(&redis, "maxmemory"),
        (64 * 1024 * 1024).to_string()
    );
    assert_eq!(config_get(&redis, "maxmemory-policy"), "noeviction");
    assert_eq!(config_get(&redis, "appendonly"), "no");
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
}

#[test]
fn two_servers_get_different_ports() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.command(&["SET", "k", "a"]).unwrap();
    assert_eq!(b.command(&["GET", "k"]).unwrap(), Reply::Bulk(None));
}

#[test]
fn password_is_required_and_in_the_url() {
    let redis = RedisServer::builder().password("s3cret").start().unwrap();
    assert_eq!(
        redis.command(&["PING"]).unwrap(),
        Reply::Status("PONG".into())
    );
    assert!(redis.url().contains(":s3cret@"));
    let stream = std::net::TcpStream::connect(redis.addr()).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    use std::io::{BufRead, Write};
    (&stream).write_all(b"PING\r\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("-NOAUTH"),
        "unauthenticated PING refused: {line}"
    );
}

#[test]
fn kill_and_restart_keep_port_and_aof_data() {
    let mut redis = RedisServer::builder().aof(true).start().unwrap();
    let port = redis.port();
    for i in 0..100 {
        let value = i.to_string();
        redis.command(&["RPUSH", "list", &value]).unwrap();
    }
    redis.kill().unwrap();
    assert!(!redis.is_running());
    assert!(
        redis.command(&["PING"]).is_err(),
        "killed server must not answer"
    );
    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.command(&["LLEN", "list"]).unwrap().as_int(),
        Some(100)
    );
}

#[test]
fn drop_kills_the_server() {
    let redis = RedisServer::start().unwrap();
    let addr = redis.addr();
    drop(redis);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Regression (found by the shipper's kill -9 test): a write torn by a crash inside a
/// `MULTI` block must not come back at a later restart. Redis 7.0's `aof-load-truncated`
/// leaves the block open and the next restart applies it; `restart` repairs the AOF first.
#[test]
fn restart_repairs_a_torn_transaction_instead_of_resurrecting_it() {
    use std::io::Write;
    let mut redis = RedisServer::builder().aof(true).start().unwrap();
    redis.command(&["SET", "base", "1"]).unwrap();
    redis.kill().unwrap();
    let incr = std::fs::read_dir(redis.dir().join("appendonlydir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .unwrap();
    let torn = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$6\r\norphan\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$3\r\nlos";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&incr)
        .unwrap()
        .write_all(torn)
        .unwrap();
    redis.restart().unwrap();
    redis.command(&["SET", "after", "1"]).unwrap();
    redis.kill().unwrap();
    redis.restart().unwrap();
    assert_eq!(
        redis.command(&["GET", "orphan"]).unwrap(),
        Reply::Bulk(None),
        "never acknowledged"
    );
    assert_eq!(
        redis
            .command(&["GET", "base"])
            .unwrap()
            .as_text()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        redis
            .command(&["GET", "after"])
            .unwrap()
            .as_text()
            .as_deref(),
        Some("1")
    );
}

#[test]
fn a_cluster_forms_and_routes_each_key_to_one_primary() {
    let cluster = evstream_testkit::ClusterSet::start().unwrap();
    assert_eq!(cluster.servers.len(), 6);
    assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
    // Keys with different hash tags live on different primaries; each is served by one.
    let owner = cluster.primary_for("events:{0}").unwrap();
    let reply = owner
        .command(&["XADD", "events:{0}", "*", "k", "v"])
        .unwrap();
    assert!(matches!(reply, Reply::Bulk(Some(_))), "{reply:?}");
    let moved = cluster
        .servers
        .iter()
        .filter(|s| s.port() != owner.port())
        .map(|s| s.command(&["XLEN", "events:{0}"]).unwrap())
        .filter(|r| matches!(r, Reply::Error(e) if e.starts_with("MOVED")))
        .count();
    assert_eq!(moved, 5, "every other node redirects");
    let mut primaries: Vec<u16> = ["events:{0}", "events:{1}", "events:{2}", "events:{3}"]
        .iter()
        .map(|key| cluster.primary_for(key).unwrap().port())
        .collect();
    primaries.sort_unstable();
    primaries.dedup();
    assert!(
        primaries.len() >= 2,
        "partitions spread over primaries: {primaries:?}"
    );
}
