//! `fabric token new`: a fresh random bearer token and the `[[token]]` table that lets
//! `fabric serve --auth` accept it (which stores only its SHA-256).

use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::args::{TokenCommand, TokenNewArgs};

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

pub fn main(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::New(args) => new(&args),
    }
}

fn new(args: &TokenNewArgs) -> ExitCode {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let who = match &args.tenant {
        Some(tenant) => Who::Tenant(tenant),
        None => Who::Admin,
    };
    if args.json {
        println!("{}", token_json(&token, who));
    } else {
        print!("{}", token_text(&token, who));
    }
    ExitCode::SUCCESS
}

/// Whom a token acts as.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    Tenant(&'a str),
    Admin,
}

/// Lowercase hex SHA-256 of a token, as the auth file stores it.
fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The `[[token]]` table for the auth file. Tenant names are checked to be plain
/// characters, so they need no TOML escaping.
fn auth_table(token: &str, who: Who<'_>) -> String {
    let line = match who {
        Who::Tenant(tenant) => format!("tenant = \"{tenant}\""),
        Who::Admin => "role = \"admin\"".to_owned(),
    };
    format!("[[token]]\n{line}\nsha256 = \"{}\"\n", digest(token))
}

/// The token on the first line, then the table to paste, so `head -1` gives the token.
fn token_text(token: &str, who: Who<'_>) -> String {
    format!(
        "{token}\n\n# Add this table to the file given to `fabric serve --auth`; it holds only the\n# token's SHA-256. Keep the token above secret: clients send it with --token or FABRIC_TOKEN.\n{}",
        auth_table(token, who)
    )
}

fn token_json(token: &str, who: Who<'_>) -> serde_json::Value {
    let mut json = serde_json::json!({"token": token, "sha256": digest(token)});
    match who {
        Who::Tenant(tenant) => json["tenant"] = tenant.into(),
        Who::Admin => json["role"] = "admin".into(),
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_the_digest_of_the_token_and_never_the_token() {
        let text = token_text("abc", Who::Tenant("acme"));
        assert!(text.starts_with("abc\n"));
        let table = text.split_once("[[token]]").unwrap().1;
        assert!(!table.contains("abc"), "{table}");
        assert!(table.contains("tenant = \"acme\"\n"), "{table}");
        // SHA-256("abc") from FIPS 180-2.
        assert!(
            table.contains(
                "sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
            ),
            "{table}"
        );
        let admin = auth_table("abc", Who::Admin);
        assert!(admin.contains("role = \"admin\"") && !admin.contains("tenant"));
    }

    #[test]
    fn json_names_the_tenant_or_the_role() {
        let json = token_json("abc", Who::Admin);
        assert_eq!(json["role"], "admin");
        assert!(json.get("tenant").is_none());
        assert_eq!(token_json("abc", Who::Tenant("t"))["tenant"], "t");
    }
}
