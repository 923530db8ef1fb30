//! API clients and scopes: the rules, not the storage.

use sha2::{Digest, Sha256};

/// Scopes of this version.
pub const SCOPES: &[&str] = &[
    "flow:read",
    "flow:write",
    "flow:simulate",
    "call:turn",
    // Simulations may perform actions that reach an account (`identity.*`, later `otp.*` and
    // `pin.*`); without it such a simulation is refused.
    "identity:simulate",
];

/// Client ids and secrets use only `[A-Za-z0-9_-]`.
pub fn is_valid_credential_text(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// SHA-256 hex of a client secret or access token. These are long random strings minted by
/// the server (not passwords people choose), so a fast hash is the right tool: it cannot be
/// brute-forced, and token checks stay cheap on every request.
pub fn hash_credential(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Parse a comma- or space-separated scope list, rejecting unknown scopes.
pub fn parse_scopes(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if !SCOPES.contains(&s) {
            return Err(s.to_owned());
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_text() {
        assert!(is_valid_credential_text("abc_DEF-123"));
        assert!(!is_valid_credential_text("abc def"));
        assert!(!is_valid_credential_text(""));
        assert!(!is_valid_credential_text("a/b"));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(
            parse_scopes("flow:read, flow:write").unwrap_or_default(),
            vec!["flow:read", "flow:write"]
        );
        assert_eq!(
            parse_scopes("flow:read flow:nope"),
            Err("flow:nope".to_owned())
        );
    }
}
