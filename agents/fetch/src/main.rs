//! Sends HTTP requests through `wasi:http/outgoing-handler`, one per line of stdin, and
//! prints `LINE -> STATUS, N bytes: BODY` or `LINE -> err: WHY` for each. A line is
//!
//! ```text
//! METHOD URL [h:NAME=VALUE]... [body:TEXT] [bytes:N] [follow] [show:N]
//! ```
//!
//! Every token is percent-decoded (`%20` is a space, `%0d%0a` CR LF). `h:` adds a request
//! header, `body:` sends TEXT, `bytes:N` sends N bytes of `x`, `follow` follows up to five
//! redirects (each one a new request the host checks again), `show:N` prints the first N
//! bytes of the body (default 200). Lines starting with `#` are skipped.
//!
//! Only a `wasm32-wasip2` component can use it: preview 1 modules have no HTTP.

use std::io::{Read, Write};

#[cfg(target_os = "wasi")]
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};

struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    follow: bool,
    show: usize,
}

fn main() {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .expect("stdin is readable");
    let mut out = std::io::stdout();
    for line in input
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let answer = parse(line).and_then(|request| fetch(&request));
        let answer = answer.unwrap_or_else(|why| format!("err: {why}"));
        writeln!(out, "{line} -> {answer}").expect("stdout is writable");
    }
}

fn parse(line: &str) -> Result<Request, String> {
    let mut tokens = line.split(' ').filter(|t| !t.is_empty());
    let method = tokens.next().ok_or("no method")?.to_string();
    let url = String::from_utf8(decode(tokens.next().ok_or("no URL")?))
        .map_err(|_| "the URL is not UTF-8")?;
    let mut request = Request {
        method,
        url,
        headers: Vec::new(),
        body: Vec::new(),
        follow: false,
        show: 200,
    };
    for token in tokens {
        if let Some(header) = token.strip_prefix("h:") {
            let (name, value) = header.split_once('=').ok_or("h:NAME=VALUE")?;
            let name = String::from_utf8(decode(name)).map_err(|_| "a header name is not UTF-8")?;
            request.headers.push((name, decode(value)));
        } else if let Some(text) = token.strip_prefix("body:") {
            request.body = decode(text);
        } else if let Some(n) = token.strip_prefix("bytes:") {
            request.body = vec![b'x'; n.parse().map_err(|_| "bytes:N")?];
        } else if let Some(n) = token.strip_prefix("show:") {
            request.show = n.parse().map_err(|_| "show:N")?;
        } else if token == "follow" {
            request.follow = true;
        } else {
            return Err(format!("unknown token {token:?}"));
        }
    }
    Ok(request)
}

/// Percent-decoding: `%XX` is the byte XX, everything else is itself.
fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(not(target_os = "wasi"))]
fn fetch(_: &Request) -> Result<String, String> {
    Err("fetch runs only as a WASI component".into())
}

/// Sends the request (and, with `follow`, its redirects) and describes the last answer.
#[cfg(target_os = "wasi")]
fn fetch(request: &Request) -> Result<String, String> {
    let mut url = request.url.clone();
    let mut hops = 0;
    loop {
        let answer = send(request, &url)?;
        match answer.location {
            Some(next) if request.follow && (300..400).contains(&answer.status) && hops < 5 => {
                hops += 1;
                url = next;
            }
            _ => return Ok(answer.describe(request.show)),
        }
    }
}

#[cfg(target_os = "wasi")]
struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
    received: usize,
    error: Option<String>,
}

#[cfg(target_os = "wasi")]
impl Answer {
    fn describe(&self, show: usize) -> String {
        let shown = String::from_utf8_lossy(&self.body[..self.body.len().min(show)]);
        let mut text = format!("{}, {} bytes: {shown}", self.status, self.received);
        if let Some(error) = &self.error {
            text.push_str(&format!(" then err: {error}"));
        }
        text
    }
}

#[cfg(target_os = "wasi")]
fn send(request: &Request, url: &str) -> Result<Answer, String> {
    use wasip2::http::outgoing_handler;

    let (scheme, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value)
            .map_err(|e| format!("header {name:?} refused: {e:?}"))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    outgoing
        .set_method(&method)
        .map_err(|()| "the method is refused")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| "the scheme is refused")?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| "the authority is refused")?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| "the path is refused")?;
    let body = outgoing.body().map_err(|()| "no request body")?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(code)?;
    if !request.body.is_empty() {
        let stream = body.write().map_err(|()| "no request body stream")?;
        for chunk in request.body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                drop(stream);
                return Err(format!("writing the body failed: {}", stream_error(e)));
            }
        }
    }
    OutgoingBody::finish(body, None).map_err(code)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response after waiting")?
        .map_err(|()| "the response was taken twice")?
        .map_err(code)?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response.consume().map_err(|()| "no response body")?;
    let stream = incoming.stream().map_err(|()| "no response body stream")?;
    let mut answer = Answer {
        status,
        location,
        body: Vec::new(),
        received: 0,
        error: None,
    };
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                answer.received += chunk.len();
                let room = request.show.saturating_sub(answer.body.len());
                answer.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => {
                answer.error = Some(stream_error(e));
                break;
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(incoming));
    Ok(answer)
}

#[cfg(target_os = "wasi")]
fn code(e: ErrorCode) -> String {
    // `ErrorCode::HttpRequestDenied` as `HttpRequestDenied`.
    let text = format!("{e:?}");
    text.strip_prefix("ErrorCode::").unwrap_or(&text).to_string()
}

#[cfg(target_os = "wasi")]
fn stream_error(e: wasip2::io::streams::StreamError) -> String {
    match e {
        wasip2::io::streams::StreamError::Closed => "closed".into(),
        wasip2::io::streams::StreamError::LastOperationFailed(e) => {
            match wasip2::http::types::http_error_code(&e) {
                Some(error) => code(error),
                None => e.to_debug_string(),
            }
        }
    }
}
