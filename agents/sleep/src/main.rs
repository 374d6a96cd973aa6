//! Sleeps for the number of milliseconds on stdin (1000 when stdin is empty).

use std::io::{self, Read};
use std::process;
use std::thread;
use std::time::Duration;

/// How long to sleep when stdin is empty.
const DEFAULT_MS: u64 = 1000;

fn main() {
    let mut input = String::new();
    if let Err(e) = io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read stdin: {e}");
        process::exit(2);
    }
    let input = input.trim();
    let ms = if input.is_empty() {
        DEFAULT_MS
    } else {
        match input.parse::<u64>() {
            Ok(ms) => ms,
            Err(e) => {
                eprintln!("stdin is not a number of milliseconds: {e}");
                process::exit(2);
            }
        }
    };
    thread::sleep(Duration::from_millis(ms));
    println!("slept {ms} ms");
}
