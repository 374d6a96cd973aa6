//! A small HTTP/1.1 server on loopback for egress tests: each path a behaviour, from a
//! plain answer to a peer that never answers, with every request it received kept for
//! the test to inspect. Plain `std::net` and a thread per connection, so any test can
//! start one.
//!
//! Paths (the query is ignored unless said):
//!
//! - `/hello` answers `200` with `hello`.
//! - `/headers` answers with the request's head (request line and headers) as its body.
//! - `/redirect?URL` answers `302` with `Location: URL`.
//! - `/bytes/N` answers with N bytes of `x` and their `content-length`.
//! - `/chunked/N` answers with N bytes of `x`, chunked, with no length announced.
//! - `/endless` answers a chunked body that never ends.
//! - `/silent` reads the request and never answers (the connection stays open).
//! - `/slow-body` answers headers, then one byte a second.
//! - anything else answers `404`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One request as the peer received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request line and the headers, as sent (lines joined by `\n`).
    pub head: String,
    /// How many body bytes came with it.
    pub body_bytes: usize,
}

impl Received {
    /// The value of header `name` (case-insensitive), if it was sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A running peer. It serves until the process ends.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Peer {
    /// Starts a peer on `127.0.0.1` on a free port.
    pub fn start() -> Peer {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts a peer on `addr` (`[::1]:0` for IPv6 loopback).
    pub fn start_on(addr: &str) -> Peer {
        let listener = TcpListener::bind(addr).expect("bind the test peer");
        let peer = Peer {
            addr: listener.local_addr().expect("peer address"),
            received: Arc::default(),
        };
        let received = peer.received.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let received = received.clone();
                thread::spawn(move || serve(stream, &received));
            }
        });
        peer
    }

    /// `http://ADDR`, to prefix paths with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").clone()
    }
}

fn serve(stream: TcpStream, received: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut stream = stream;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
            head.push(line);
        }
        let chunked = head.iter().any(|l| {
            l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body_bytes = if chunked {
            read_chunked(&mut reader)
        } else {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            length
        };
        let head = head.join("\n");
        received.lock().expect("received lock").push(Received {
            head: head.clone(),
            body_bytes,
        });
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        if answer(&mut stream, &target, &head).is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> usize {
    let mut total = 0;
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return total;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return total;
        }
        total += size;
        if size == 0 {
            return total;
        }
    }
}

fn answer(stream: &mut TcpStream, target: &str, head: &str) -> std::io::Result<()> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let reply = |stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        )?;
        stream.write_all(body)
    };
    match path {
        "/hello" => reply(stream, "200 OK", "", b"hello"),
        "/headers" => reply(stream, "200 OK", "", head.as_bytes()),
        "/redirect" => reply(stream, "302 Found", &format!("location: {query}\r\n"), b""),
        "/endless" => {
            stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
            let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
            loop {
                stream.write_all(chunk.as_bytes())?;
            }
        }
        "/silent" => loop {
            thread::sleep(Duration::from_secs(1));
            // Stay silent until the client gives up and closes.
            if stream.peek(&mut [0; 1]).is_ok_and(|n| n == 0) {
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
        },
        "/slow-body" => {
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")?;
            loop {
                stream.write_all(b"x")?;
                thread::sleep(Duration::from_secs(1));
            }
        }
        _ => {
            if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
                return reply(stream, "200 OK", "", &vec![b'x'; n]);
            }
            if let Some(n) = path
                .strip_prefix("/chunked/")
                .and_then(|n| n.parse::<usize>().ok())
            {
                stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
                let mut left = n;
                while left > 0 {
                    let size = left.min(16 * 1024);
                    write!(stream, "{size:x}\r\n{}\r\n", "x".repeat(size))?;
                    left -= size;
                }
                return stream.write_all(b"0\r\n\r\n");
            }
            reply(stream, "404 Not Found", "", b"not found")
        }
    }
}
