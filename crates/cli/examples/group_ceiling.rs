//! The ceiling of a consumer group on one Redis: what Redis itself can serve of
//! `XREADGROUP COUNT n` + one bulk `XACK` per batch, with a client that costs next to nothing
//! (a raw socket, two reads in flight, the reply scanned only for entry ids). No decoding,
//! no handler, no exactly-once commit: the bound every real consumer sits under.
//!
//! Usage: `group_ceiling HOST:PORT STREAM GROUP COUNT` — creates GROUP at `0`, reads the
//! stream to its end and prints `events events_per_s`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Reads one RESP2 value; pushes every bulk string found at `depth` == 4 (entry ids of an
/// `XREADGROUP` reply: reply → stream → entries → entry → id) into `ids`.
fn skip(reader: &mut impl BufRead, depth: usize, ids: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let text = std::str::from_utf8(&line[1..line.len() - 2]).expect("ascii header");
    match line[0] {
        b'*' => {
            let n: i64 = text.parse().expect("array length");
            for i in 0..n.max(0) {
                // In an entry (depth 3), the first element is the id; the second the fields.
                let child = if depth == 3 && i > 0 {
                    usize::MAX
                } else {
                    depth.saturating_add(1)
                };
                skip(reader, child, ids)?;
            }
        }
        b'$' => {
            let n: i64 = text.parse().expect("bulk length");
            if n >= 0 {
                let mut bytes = vec![0; n as usize + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(n as usize);
                if depth == 4 {
                    ids.push(bytes);
                }
            }
        }
        b'-' => panic!("redis error: {text}"),
        _ => {}
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, stream, group, count] = args.as_slice() else {
        eprintln!("usage: group_ceiling HOST:PORT STREAM GROUP COUNT");
        std::process::exit(2);
    };
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut writer = socket.try_clone()?;
    let mut reader = BufReader::with_capacity(1 << 20, socket);
    // Commands are packed by the redis crate; only the socket and the reply scan are ours.
    let create = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .get_packed_command();
    writer.write_all(&create)?;
    skip(&mut reader, 0, &mut Vec::new())?;
    let read = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("c1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .get_packed_command();
    let mut out = Vec::new();
    // Replies expected, in order: true = a read, false = an ack.
    let mut pending = VecDeque::new();
    out.clear();
    for _ in 0..2 {
        out.extend_from_slice(&read);
        pending.push_back(true);
    }
    writer.write_all(&out)?;
    let (mut events, mut start, mut reads_out) = (0u64, None, 2);
    while let Some(is_read) = pending.pop_front() {
        let mut ids = Vec::new();
        skip(&mut reader, 0, &mut ids)?;
        if !is_read {
            continue;
        }
        reads_out -= 1;
        if ids.is_empty() {
            continue; // the end of the stream: let the other read drain
        }
        start.get_or_insert_with(Instant::now);
        events += ids.len() as u64;
        out.clear();
        out.extend_from_slice(
            &redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&ids)
                .get_packed_command(),
        );
        pending.push_back(false);
        if reads_out < 2 {
            out.extend_from_slice(&read);
            pending.push_back(true);
            reads_out += 1;
        }
        writer.write_all(&out)?;
    }
    let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!("{events} {:.0}", events as f64 / seconds.max(1e-9));
    Ok(())
}
