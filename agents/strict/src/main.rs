//! Greets the `name` of the JSON object on stdin; any other input exits with code 3.

use std::io::{self, Read};
use std::process;

/// The exit code for input that is not a JSON object with a string `name`.
const EXIT_BAD_INPUT: i32 = 3;

fn name(input: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| format!("input is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "input is not a JSON object".to_owned())?;
    match object.get("name") {
        Some(serde_json::Value::String(name)) => Ok(name.clone()),
        Some(_) => Err("field `name` is not a string".to_owned()),
        None => Err("field `name` is missing".to_owned()),
    }
}

fn main() {
    let mut input = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read stdin: {e}");
        process::exit(EXIT_BAD_INPUT);
    }
    match name(&input) {
        Ok(name) => println!("hello, {name}"),
        Err(reason) => {
            eprintln!("{reason}");
            process::exit(EXIT_BAD_INPUT);
        }
    }
}
