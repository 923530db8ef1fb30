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

/// A scope a client may hold that stands for [`MANAGE_GRANTS`] together (the name Genesys
/// Cloud's advice uses for deployment permission errors). Routes never require it.
pub const FLOW_MANAGE: &str = "flow:manage";

/// What [`FLOW_MANAGE`] grants: a token of a client holding it carries all three.
pub const MANAGE_GRANTS: &[&str] = &["flow:read", "flow:write", "flow:simulate"];

/// Every scope a client may be given: [`SCOPES`] and [`FLOW_MANAGE`].
pub fn known_scopes() -> impl Iterator<Item = &'static str> {
    SCOPES.iter().copied().chain(std::iter::once(FLOW_MANAGE))
}

/// The scopes of a token issued to a client holding `client_scopes`, for a request of
/// `requested` scopes (`None`: all of them), or the first requested scope the client does
/// not hold (`Err`).
///
/// A client holding [`FLOW_MANAGE`] holds [`MANAGE_GRANTS`] too, and a token that would
/// carry `flow:manage` or any of its grants carries them all: asking for no scope, for
/// `flow:manage` or for `flow:read` alone gives `flow:manage flow:read flow:write
/// flow:simulate`. Scopes are listed once each, in the order asked (or held).
pub fn grant_scopes<S: AsRef<str>>(
    client_scopes: &[S],
    requested: Option<&[&str]>,
) -> Result<Vec<String>, String> {
    let held: Vec<&str> = client_scopes.iter().map(AsRef::as_ref).collect();
    let manage = held.contains(&FLOW_MANAGE);
    let holds = |s: &str| held.contains(&s) || (manage && MANAGE_GRANTS.contains(&s));
    let asked: Vec<&str> = match requested {
        None => held.clone(),
        Some(r) => r.to_vec(),
    };
    let mut out: Vec<String> = Vec::new();
    for s in asked {
        if !holds(s) {
            return Err(s.to_owned());
        }
        let bundle = manage && (s == FLOW_MANAGE || MANAGE_GRANTS.contains(&s));
        let grants: Vec<&str> = if bundle {
            std::iter::once(FLOW_MANAGE)
                .chain(MANAGE_GRANTS.iter().copied())
                .collect()
        } else {
            vec![s]
        };
        for g in grants {
            if !out.iter().any(|o| o == g) {
                out.push(g.to_owned());
            }
        }
    }
    Ok(out)
}

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

/// Parse a comma- or space-separated scope list, rejecting unknown scopes (`flow:manage` is
/// known).
pub fn parse_scopes(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if !known_scopes().any(|k| k == s) {
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
        assert_eq!(
            parse_scopes("flow:manage").unwrap_or_default(),
            vec!["flow:manage"]
        );
    }

    const BUNDLE: [&str; 4] = ["flow:manage", "flow:read", "flow:write", "flow:simulate"];

    #[test]
    fn flow_manage_grants_read_write_and_simulate_however_asked() {
        let client = ["flow:manage"];
        for asked in [
            None,
            Some(&["flow:manage"][..]),
            Some(&["flow:read"][..]),
            Some(&["flow:write"][..]),
            Some(&["flow:simulate"][..]),
            Some(&["flow:read", "flow:write", "flow:simulate"][..]),
            Some(&["flow:simulate", "flow:manage"][..]),
        ] {
            let got = grant_scopes(&client, asked);
            let mut got = got.unwrap_or_default();
            got.sort();
            let mut want = BUNDLE.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{asked:?}");
        }
        // flow:manage is about flows only.
        assert_eq!(
            grant_scopes(&client, Some(&["call:turn"])),
            Err("call:turn".to_owned())
        );
        assert_eq!(
            grant_scopes(&client, Some(&["identity:simulate"])),
            Err("identity:simulate".to_owned())
        );
        // Beside other scopes, those stay as asked.
        let both = ["call:turn", "flow:manage"];
        assert_eq!(
            grant_scopes(&both, Some(&["call:turn"])),
            Ok(vec!["call:turn".to_owned()])
        );
        assert_eq!(
            grant_scopes(&both, None).map(|v| v.len()),
            Ok(5),
            "call:turn and the bundle"
        );
    }

    #[test]
    fn without_flow_manage_a_token_gets_exactly_what_it_asks() {
        let client = ["flow:read", "flow:write"];
        assert_eq!(
            grant_scopes(&client, Some(&["flow:read", "flow:read"])),
            Ok(vec!["flow:read".to_owned()])
        );
        assert_eq!(
            grant_scopes(&client, None),
            Ok(vec!["flow:read".to_owned(), "flow:write".to_owned()])
        );
        assert_eq!(
            grant_scopes(&client, Some(&["flow:manage"])),
            Err("flow:manage".to_owned())
        );
        assert_eq!(
            grant_scopes(&client, Some(&["flow:simulate"])),
            Err("flow:simulate".to_owned())
        );
    }
}
