//! A fault-injecting TCP proxy between a client and a server on loopback.
//!
//! Faults: cut every open connection now; cut as soon as the client has sent more than N
//! bytes (after forwarding them, so the server acts on the request and the client never
//! sees the answer: the "uncertain outcome" of a write); refuse new connections; stall every
//! connection (bytes held both ways, connections left open, as when a network path or the
//! server hangs), then release what was held, late, in order.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Default)]
struct Shared {
    /// Streams of open connections (both sides), to cut them.
    open: Mutex<Vec<TcpStream>>,
    /// When non-zero: cut once this many more client bytes have been forwarded.
    cut_after: AtomicU64,
    refuse: AtomicBool,
    /// While set, bytes read are held, not forwarded.
    stall: AtomicBool,
    /// While set, answers from the server are dropped (an armed cut is firing).
    mute: AtomicBool,
    cuts: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared::default());
        let accept = Arc::clone(&shared);
        thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, upstream, &accept))?;
        Ok(Self { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every open connection now.
    pub fn cut_all(&self) {
        cut(&self.shared);
    }

    /// Arms a cut: once the client has sent more than `bytes` further bytes, they are
    /// forwarded and then every connection is closed.
    pub fn cut_after_client_bytes(&self, bytes: u64) {
        self.shared.cut_after.store(bytes.max(1), Ordering::SeqCst);
    }

    /// Whether an armed cut has not fired yet.
    pub fn cut_pending(&self) -> bool {
        self.shared.cut_after.load(Ordering::SeqCst) != 0
    }

    /// Refuses (closes at once) new connections while `true`.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// While `true`, every connection (open or new) is stalled: what either side sends is
    /// held, nothing is closed. Set back to `false`, the held bytes are forwarded in order,
    /// late: a request its client gave up on still reaches the server then (unless the
    /// client's side was closed first and the server's answer is all that is left).
    pub fn stall(&self, stall: bool) {
        self.shared.stall.store(stall, Ordering::SeqCst);
    }

    /// How many times connections were cut.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        cut(&self.shared);
    }
}

fn cut(shared: &Shared) {
    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
    for stream in open.drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
    shared.cuts.fetch_add(1, Ordering::SeqCst);
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let pumps = (|| -> io::Result<_> {
                    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.push(client.try_clone()?);
                    open.push(server.try_clone()?);
                    Ok((client.try_clone()?, server.try_clone()?))
                })();
                let Ok((client_reader, server_reader)) = pumps else {
                    continue;
                };
                let to_server = Arc::clone(shared);
                thread::spawn(move || pump(client_reader, server, &to_server, true));
                let to_client = Arc::clone(shared);
                thread::spawn(move || pump(server_reader, client, &to_client, false));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, from_client: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while shared.stall.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        if !from_client && shared.mute.load(Ordering::SeqCst) {
            continue;
        }
        if from_client && shared.cut_after.load(Ordering::SeqCst) != 0 {
            let armed = shared.cut_after.load(Ordering::SeqCst);
            if n as u64 >= armed {
                // The request reaches the server; its answer never reaches the client.
                shared.mute.store(true, Ordering::SeqCst);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if from_client {
            let armed = shared.cut_after.load(Ordering::SeqCst);
            if armed != 0 {
                if n as u64 >= armed {
                    shared.cut_after.store(0, Ordering::SeqCst);
                    // Let the server act on the request before the cut.
                    thread::sleep(Duration::from_millis(20));
                    cut(shared);
                    shared.mute.store(false, Ordering::SeqCst);
                    break;
                }
                shared.cut_after.store(armed - n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
