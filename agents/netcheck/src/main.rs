//! An attacking agent for the sandbox's network tests: it runs the commands on stdin, one
//! per line, each through plain `std::net` calls, and prints `CMD -> ok: ...` or
//! `CMD -> err: KIND (MESSAGE)` for each.
//!
//! Commands: `tcp ADDR` (`TcpStream::connect`, then write a line), `listen ADDR`
//! (`TcpListener::bind`, then report the bound address), `udp ADDR` (`UdpSocket::bind`
//! on an ephemeral loopback port, then `send_to` ADDR) and `lookup HOST` (name
//! resolution of `HOST:80`). ADDR is `IP:PORT` or `HOST:PORT`.

use std::io::{self, BufRead, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

type Outcome = Result<String, String>;

fn io_error(e: io::Error) -> String {
    format!("{:?} ({e})", e.kind())
}

fn tcp(addr: &str) -> Outcome {
    let mut stream = TcpStream::connect(addr).map_err(io_error)?;
    stream
        .write_all(b"hello from the sandbox\n")
        .map_err(io_error)?;
    Ok(format!("connected to {addr} and wrote a line"))
}

fn listen(addr: &str) -> Outcome {
    let listener = TcpListener::bind(addr).map_err(io_error)?;
    let local = listener.local_addr().map_err(io_error)?;
    Ok(format!("listening on {local}"))
}

fn udp(addr: &str) -> Outcome {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(io_error)?;
    let sent = socket
        .send_to(b"hello from the sandbox", addr)
        .map_err(io_error)?;
    Ok(format!("sent {sent} bytes to {addr}"))
}

fn lookup(host: &str) -> Outcome {
    let addrs: Vec<_> = (host, 80).to_socket_addrs().map_err(io_error)?.collect();
    Ok(format!("{} addrs: {addrs:?}", addrs.len()))
}

fn run(command: &str) -> Outcome {
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    let arg = arg.trim();
    match name {
        "tcp" => tcp(arg),
        "listen" => listen(arg),
        "udp" => udp(arg),
        "lookup" => lookup(arg),
        _ => Err("unknown command".to_owned()),
    }
}

fn main() {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let result = match run(command) {
            Ok(detail) => format!("ok: {detail}"),
            Err(reason) => format!("err: {reason}"),
        };
        println!("{command} -> {result}");
    }
}
