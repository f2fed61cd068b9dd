//! A userspace TCP proxy between clients and one server, to partition them without root.
//!
//! [`TcpProxy::stall`] is a *silent* partition: every open connection stays open (no FIN, no RST: the
//! client's and the server's sockets look healthy) but no byte crosses in either direction, and new
//! connections are accepted by the proxy but not connected upstream. [`TcpProxy::heal`] ends it: bytes
//! written during the stall are then delivered, in order, nothing dropped (they waited in the kernel's
//! socket buffers and in at most one 16 KiB chunk per direction held by the proxy), as TCP retransmission
//! would deliver them after a real partition heals; connections accepted during the stall are connected
//! upstream. If a writer fills the buffers during a long stall its writes block, as they would against a
//! silent peer. [`TcpProxy::cut`] closes every connection (both sides see EOF/reset).
//!
//! Built on std threads: one accept thread, and per connection one thread per direction.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Conn {
    id: u64,
    /// The accepted (client-side) socket.
    client: TcpStream,
    /// The upstream socket, once connected.
    upstream: Option<TcpStream>,
    /// Set by `cut` (and on drop): the connection's threads stop.
    cut: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Shared {
    stalled: AtomicBool,
    closing: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

impl Shared {
    fn remove(&self, id: u64) {
        self.conns.lock().unwrap().retain(|c| c.id != id);
    }
}

/// A TCP proxy on a free loopback port forwarding to one upstream address (see the module docs).
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (e.g. `"127.0.0.1:4222"` or a `SocketAddr`) on a free loopback port.
    pub fn start(upstream: impl ToSocketAddrs) -> Self {
        let upstream = upstream
            .to_socket_addrs()
            .expect("resolve upstream")
            .next()
            .expect("an upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("tcp-proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, upstream, shared))
                .expect("spawn proxy thread")
        };
        Self {
            addr,
            upstream,
            shared,
            accept: Some(accept),
        }
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Stops forwarding in both directions without closing anything (a silent partition).
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Forwards again; bytes held during the stall are delivered.
    pub fn heal(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
    }

    /// True while stalled.
    pub fn is_stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Closes every open connection, both sides (new connections are still accepted).
    pub fn cut(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for conn in conns {
            close(&conn);
        }
    }

    /// The number of open connections through the proxy (including those accepted during a stall and
    /// not yet connected upstream).
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn close(conn: &Conn) {
    conn.cut.store(true, Ordering::SeqCst);
    let _ = conn.client.shutdown(Shutdown::Both);
    if let Some(up) = &conn.upstream {
        let _ = up.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.closing.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let cut = Arc::new(AtomicBool::new(false));
                let Ok(client_clone) = client.try_clone() else {
                    continue;
                };
                shared.conns.lock().unwrap().push(Conn {
                    id,
                    client: client_clone,
                    upstream: None,
                    cut: cut.clone(),
                });
                let shared = shared.clone();
                let _ = thread::Builder::new()
                    .name(format!("tcp-proxy-conn-{id}"))
                    .spawn(move || serve(id, client, upstream, cut, shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Connects one accepted client upstream (after any stall) and pumps both directions until either side
/// closes or the connection is cut.
fn serve(id: u64, client: TcpStream, upstream: SocketAddr, cut: Arc<AtomicBool>, shared: Arc<Shared>) {
    let stopped = || cut.load(Ordering::SeqCst) || shared.closing.load(Ordering::SeqCst);
    while shared.stalled.load(Ordering::SeqCst) && !stopped() {
        thread::sleep(POLL);
    }
    if stopped() {
        let _ = client.shutdown(Shutdown::Both);
        shared.remove(id);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        shared.remove(id);
        return;
    };
    let _ = server.set_nodelay(true);
    let clones = (client.try_clone(), server.try_clone(), server.try_clone());
    let (Ok(client_w), Ok(server_r), Ok(server_registered)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        shared.remove(id);
        return;
    };
    {
        let mut conns = shared.conns.lock().unwrap();
        match conns.iter_mut().find(|c| c.id == id) {
            Some(conn) => conn.upstream = Some(server_registered),
            None => {
                // Cut while connecting.
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let up = {
        let (cut, shared) = (cut.clone(), shared.clone());
        thread::spawn(move || pump(client, server, &cut, &shared))
    };
    pump(server_r, client_w, &cut, &shared);
    let _ = up.join();
    shared.remove(id);
}

/// Copies `from` → `to`, holding still while the proxy is stalled. On EOF half-closes `to`; on an error
/// or a cut closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, shared: &Shared) {
    let stopped = || cut.load(Ordering::SeqCst) || shared.closing.load(Ordering::SeqCst);
    let stalled = || shared.stalled.load(Ordering::SeqCst);
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stopped() {
            break;
        }
        if stalled() {
            thread::sleep(POLL);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // A chunk read just before a stall waits for the heal.
        while stalled() && !stopped() {
            thread::sleep(POLL);
        }
        if stopped() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn read_exact_within(stream: &mut TcpStream, len: usize, timeout: Duration) -> Vec<u8> {
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// True if nothing arrives within `wait` while the socket stays open (a read times out, not EOF).
    fn silent_but_open(stream: &mut TcpStream, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            Ok(n) => {
                eprintln!("read {n} bytes (0: closed) where silence was expected");
                false
            }
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn forwards_stalls_silently_and_heals() {
        let proxy = TcpProxy::start(echo_server());
        assert!(proxy.url().starts_with("nats://127.0.0.1:"));
        let mut a = TcpStream::connect(proxy.addr()).unwrap();
        a.write_all(b"ping").unwrap();
        assert_eq!(read_exact_within(&mut a, 4, Duration::from_secs(5)), b"ping");
        assert_eq!(proxy.connections(), 1);

        proxy.stall();
        a.write_all(b"during").unwrap();
        assert!(silent_but_open(&mut a, Duration::from_millis(400)));
        // A connection made during the stall is accepted but gets nothing.
        let mut b = TcpStream::connect(proxy.addr()).unwrap();
        b.write_all(b"new").unwrap();
        assert!(silent_but_open(&mut b, Duration::from_millis(300)));
        wait_for("two connections", || proxy.connections() == 2);
        // Still open after the stall: a write succeeds.
        a.write_all(b"-more").unwrap();

        proxy.heal();
        // What was written during the stall is delivered, in order.
        assert_eq!(
            read_exact_within(&mut a, 11, Duration::from_secs(5)),
            b"during-more"
        );
        assert_eq!(read_exact_within(&mut b, 3, Duration::from_secs(5)), b"new");
        a.write_all(b"after").unwrap();
        assert_eq!(read_exact_within(&mut a, 5, Duration::from_secs(5)), b"after");
    }

    #[test]
    fn cut_closes_every_connection() {
        let proxy = TcpProxy::start(echo_server().to_string());
        let mut a = TcpStream::connect(proxy.addr()).unwrap();
        a.write_all(b"x").unwrap();
        assert_eq!(read_exact_within(&mut a, 1, Duration::from_secs(5)), b"x");
        proxy.cut();
        assert_eq!(proxy.connections(), 0);
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        // EOF (or a reset), not a timeout.
        match a.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "{e}"
            ),
        }
        // New connections still work.
        let mut b = TcpStream::connect(proxy.addr()).unwrap();
        b.write_all(b"y").unwrap();
        assert_eq!(read_exact_within(&mut b, 1, Duration::from_secs(5)), b"y");
        drop(b);
        wait_for("the closed connection to be forgotten", || {
            proxy.connections() == 0
        });
    }
}
