//! The small HTTP API `fabric demo` starts on loopback for its egress example: `GET
//! /weather` answers a JSON forecast to a request carrying the demo policy's token, 401
//! to any other. Plain `std::net`, a thread per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// The token the demo's egress policy sets (the guest never sees it).
pub const TOKEN: &str = "demo-token-the-guest-never-sees";

/// Starts the API on `127.0.0.1` on a free port; it serves until the process ends.
pub fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    Ok(addr)
}

fn serve(stream: TcpStream) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut authorized = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                authorized |= name.eq_ignore_ascii_case("authorization")
                    && value.trim() == format!("Bearer {TOKEN}");
            }
        }
        let (status, body) = match (request_line.split(' ').nth(1), authorized) {
            (Some("/weather"), true) => {
                ("200 OK", r#"{"city":"Lisbon","sky":"clear","temp_c":21}"#)
            }
            (Some("/weather"), false) => ("401 Unauthorized", r#"{"error":"no token"}"#),
            _ => ("404 Not Found", r#"{"error":"not found"}"#),
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
