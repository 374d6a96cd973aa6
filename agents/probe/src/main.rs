//! A hostile-but-honest agent for security tests: it runs the commands on stdin, one
//! per line, and prints one line `CMD -> ok: ...` or `CMD -> err: ...` for each.
//!
//! Commands: `read PATH`, `write PATH`, `list PATH`, `env`, `args`,
//! `connect HOST:PORT`, `resolve HOST`, `sleep MS`, `spin`, `alloc MIB`, `print N`,
//! `eprint N`, `exit CODE` and `panic`. `spin`, `exit` and `panic` print no result
//! line: they never return. `print N` and `eprint N` write N bytes of `x` (and a
//! newline when N > 0) to stdout or stderr before the result line. I/O errors are
//! reported as `err: KIND (MESSAGE)` with the `std::io::ErrorKind` name.

use std::fmt::Display;
use std::fs;
use std::hint::black_box;
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

/// How many bytes of a file `read` shows.
const READ_PREVIEW: usize = 40;
/// The size of one write for `print` and `eprint`.
const CHUNK: usize = 64 * 1024;
/// How long `connect` waits for a connection to an address given as `IP:PORT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Outcome = Result<String, String>;

fn io_error(e: io::Error) -> String {
    format!("{:?} ({e})", e.kind())
}

fn parse<T: FromStr>(arg: &str) -> Result<T, String>
where
    T::Err: Display,
{
    arg.parse()
        .map_err(|e| format!("bad argument {arg:?}: {e}"))
}

fn read(path: &str) -> Outcome {
    let text = fs::read_to_string(path).map_err(io_error)?;
    let mut end = text.len().min(READ_PREVIEW);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(format!("{} bytes: {:?}", text.len(), &text[..end]))
}

fn write(path: &str) -> Outcome {
    fs::write(path, "x").map_err(io_error)?;
    Ok("wrote 1 byte".to_owned())
}

fn list(path: &str) -> Outcome {
    let mut entries = 0;
    for entry in fs::read_dir(path).map_err(io_error)? {
        entry.map_err(io_error)?;
        entries += 1;
    }
    Ok(format!("{entries} entries"))
}

fn env() -> Outcome {
    let names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        Ok("0 vars".to_owned())
    } else {
        Ok(format!("{} vars: {}", names.len(), names.join(",")))
    }
}

fn args() -> Outcome {
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    Ok(format!("{} args: {args:?}", args.len()))
}

fn connect(target: &str) -> Outcome {
    let stream = match target.parse::<SocketAddr>() {
        Ok(addr) => TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT),
        Err(_) => TcpStream::connect(target),
    }
    .map_err(io_error)?;
    match stream.peer_addr() {
        Ok(peer) => Ok(format!("connected to {peer}")),
        Err(_) => Ok("connected".to_owned()),
    }
}

fn resolve(host: &str) -> Outcome {
    let addrs: Vec<SocketAddr> = format!("{host}:80")
        .to_socket_addrs()
        .map_err(io_error)?
        .collect();
    Ok(format!("{} addrs: {addrs:?}", addrs.len()))
}

fn sleep(arg: &str) -> Outcome {
    let ms: u64 = parse(arg)?;
    thread::sleep(Duration::from_millis(ms));
    Ok(format!("slept {ms} ms"))
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter).wrapping_add(1);
    }
}

fn alloc(arg: &str) -> Outcome {
    let mib: usize = parse(arg)?;
    let bytes = mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| format!("{mib} MiB overflows usize"))?;
    let mut block: Vec<u8> = Vec::new();
    block
        .try_reserve_exact(bytes)
        .map_err(|e| format!("allocation failed: {e}"))?;
    block.resize(bytes, 1);
    black_box(&mut block);
    Ok(format!("allocated and touched {mib} MiB"))
}

fn flood(mut out: impl Write, arg: &str) -> Outcome {
    let total: usize = parse(arg)?;
    let chunk = [b'x'; CHUNK];
    let mut written = 0;
    while written < total {
        let n = (total - written).min(CHUNK);
        out.write_all(&chunk[..n])
            .map_err(|e| format!("after {written} bytes: {}", io_error(e)))?;
        written += n;
    }
    if total > 0 {
        out.write_all(b"\n").map_err(io_error)?;
    }
    out.flush().map_err(io_error)?;
    Ok(format!("wrote {total} bytes"))
}

fn exit(arg: &str) -> Outcome {
    let code: i32 = parse(arg)?;
    process::exit(code)
}

fn run(command: &str) -> Outcome {
    let (name, arg) = match command.split_once(' ') {
        Some((name, arg)) => (name, arg.trim()),
        None => (command, ""),
    };
    match name {
        "read" => read(arg),
        "write" => write(arg),
        "list" => list(arg),
        "env" => env(),
        "args" => args(),
        "connect" => connect(arg),
        "resolve" => resolve(arg),
        "sleep" => sleep(arg),
        "spin" => spin(),
        "alloc" => alloc(arg),
        "print" => flood(io::stdout().lock(), arg),
        "eprint" => flood(io::stderr().lock(), arg),
        "exit" => exit(arg),
        "panic" => panic!("the probe was asked to panic"),
        _ => Err("unknown command".to_owned()),
    }
}

fn main() {
    for line in io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("cannot read stdin: {}", io_error(e));
                process::exit(2);
            }
        };
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let result = match run(command) {
            Ok(detail) => format!("ok: {detail}"),
            Err(reason) => format!("err: {reason}"),
        };
        let mut stdout = io::stdout().lock();
        // A capped or closed stdout is the sandbox's business: keep going so that the
        // remaining commands still run.
        let _ = writeln!(stdout, "{command} -> {result}");
        let _ = stdout.flush();
    }
}
