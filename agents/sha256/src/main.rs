//! Prints the lowercase hex SHA-256 of stdin followed by a newline.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

fn main() -> io::Result<()> {
    let mut hasher = Sha256::new();
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    writeln!(io::stdout().lock(), "{:x}", hasher.finalize())
}
