//! Authenticating the platforms' requests: Twilio's `X-Twilio-Signature` and jambonz's
//! `Jambonz-Signature`. Pure functions: the clock is an argument, nothing is logged here.
//!
//! Every comparison of a computed MAC with a received one is constant-time (`subtle`), and
//! every configured secret is tried without stopping at the first match, so the time taken
//! does not say which secret matched or how much of a signature was right. Empty secrets are
//! skipped: a blank token in the configuration must never let anyone sign.
//!
//! # Twilio
//!
//! As documented ("Webhooks security") and as Twilio's helper libraries implement it
//! (twilio-python `request_validator.py`, twilio-node `webhooks.ts`, their unit tests):
//!
//! - the signed string is the full URL Twilio requested (with its query string), followed,
//!   for an `application/x-www-form-urlencoded` POST, by every body parameter as `name` then
//!   `value` with no separator, sorted by name; a name given several times contributes each
//!   distinct value once, values sorted;
//! - the signature is `base64(HMAC-SHA1(auth token, signed string))`;
//! - Twilio is inconsistent about the port, so the helpers accept the signature of the URL
//!   without any port (`https://host:8443/x` → `https://host/x`) and of the URL with its
//!   port, adding the scheme's default when it has none (`https://host/x` →
//!   `https://host:443/x`). [`twilio_check`] does the same.
//! - JSON bodies: Twilio adds `bodySHA256=<hex SHA-256 of the raw body>` to the URL's query
//!   string and signs the URL alone; see [`twilio_check_json`].
//!
//! The URL must be the public URL the platform called (as configured), byte for byte; it is
//! not normalised here (twilio-node would, for instance, percent-encode a `'` in the query).
//!
//! # jambonz
//!
//! As jambonz's feature server sends it (`lib/utils/base-requestor.js`) and its Node SDK
//! checks it (`WebhookResponse.verifyJambonzSignature`): a header
//! `Jambonz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` where
//! `<body>` is the JSON body exactly as sent. Several `v1=` entries are accepted (any may
//! match); unknown schemes are ignored. Only POST hooks can be checked: for a GET hook
//! jambonz signs a JSON payload it does not send.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Name of Twilio's signature header.
pub const TWILIO_SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// Name of jambonz's signature header.
pub const JAMBONZ_SIGNATURE_HEADER: &str = "Jambonz-Signature";
/// How far (either way) a jambonz timestamp may be from our clock, as jambonz's SDK allows.
pub const JAMBONZ_DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Longest signature header looked at; anything longer is malformed.
const MAX_HEADER_LEN: usize = 4096;
/// Most `v1=` entries looked at in one jambonz header.
const MAX_JAMBONZ_SIGNATURES: usize = 16;
/// The query parameter Twilio adds for JSON bodies.
const TWILIO_BODY_HASH_PARAM: &str = "bodySHA256";

/// Why a platform request was refused. For logs only: the HTTP answer is a bare 403 whatever
/// the reason. Never carries the header, the body or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing or empty")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("signature timestamp outside the allowed window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------- Twilio

/// Twilio's signature of a request to `url` with the form parameters `params` (in any
/// order; repeated names allowed), as the `X-Twilio-Signature` header carries it.
pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(twilio_mac(auth_token, url, params))
}

/// Whether `header` is a valid Twilio signature of a form POST (or a GET: pass no params) to
/// `url` under any of `tokens` (the current auth token and, during a rotation, the previous
/// one). False on an empty or malformed header.
pub fn twilio_verify(
    tokens: &[&[u8]],
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    twilio_check(tokens, url, params, header).is_ok()
}

/// [`twilio_verify`] with the reason, for the log line.
pub fn twilio_check(
    tokens: &[&[u8]],
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> Result<(), SignatureError> {
    let received = decode_twilio_header(header)?;
    let (without_port, with_port) = twilio_url_variants(url);
    let mut matched = Choice::from(0);
    for token in tokens.iter().filter(|t| !t.is_empty()) {
        matched |= twilio_mac(token, &without_port, params).ct_eq(&received);
        matched |= twilio_mac(token, &with_port, params).ct_eq(&received);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A Twilio request with an `application/json` body: `url` carries
/// `bodySHA256=<hex SHA-256 of body>` in its query string and the signature covers the URL
/// alone. Both the signature and the body hash must match.
pub fn twilio_check_json(
    tokens: &[&[u8]],
    url: &str,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    decode_twilio_header(header)?;
    let claimed_hash = query_param(url, TWILIO_BODY_HASH_PARAM).ok_or(SignatureError::Malformed)?;
    twilio_check(tokens, url, &[], header)?;
    let actual = hex::encode(Sha256::digest(body));
    if bool::from(actual.as_bytes().ct_eq(claimed_hash.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The raw HMAC-SHA1 of Twilio's signed string.
fn twilio_mac(auth_token: &[u8], url: &str, params: &[(String, String)]) -> [u8; 20] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha1::new_from_slice(auth_token) {
        Ok(mac) => mac,
        Err(_) => return [0; 20],
    };
    mac.update(url.as_bytes());
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Sorting the pairs sorts by name, then each name's values; equal pairs are signed once.
    sorted.sort_unstable();
    sorted.dedup();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// The received signature's 20 bytes. Twilio sends canonical padded standard base64.
fn decode_twilio_header(header: &str) -> Result<[u8; 20], SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let bytes = STANDARD
        .decode(header)
        .map_err(|_| SignatureError::Malformed)?;
    <[u8; 20]>::try_from(bytes.as_slice()).map_err(|_| SignatureError::Malformed)
}

/// `url` without any port, and `url` with a port (its own, else the scheme's default), as
/// Twilio's helpers try both. One of the two is `url` itself.
fn twilio_url_variants(url: &str) -> (String, String) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), url.to_owned());
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    // The host starts after any userinfo; an IPv6 literal's colons are inside brackets.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let search_from = host_port.rfind(']').map_or(0, |i| i + 1);
    let port_colon = host_port[search_from..]
        .rfind(':')
        .map(|i| search_from + i)
        .filter(|&i| {
            let port = &host_port[i + 1..];
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
    let host_end = authority_start + host_start + port_colon.unwrap_or(host_port.len());
    let before = &url[..host_end];
    let after = &url[authority_end..];
    match port_colon {
        Some(_) => (format!("{before}{after}"), url.to_owned()),
        None => {
            let scheme = &url[..scheme_end];
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            (url.to_owned(), format!("{before}:{port}{after}"))
        }
    }
}

/// The first value of query parameter `name` in `url`, percent-decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    let without_fragment = url.split('#').next().unwrap_or(url);
    let (_, query) = without_fragment.split_once('?')?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

// --------------------------------------------------------------------------------- jambonz

/// The `Jambonz-Signature` header value jambonz would send with `body` at time `t` (unix
/// seconds): `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn jambonz_sign(secret: &[u8], body: &[u8], t: i64) -> String {
    format!("t={t},v1={}", hex::encode(jambonz_mac(secret, t, body)))
}

/// Checks a `Jambonz-Signature` header against the raw request body under any of `secrets`
/// (current and previous webhook secret), then that its timestamp is within
/// `tolerance_secs` of `now_unix_secs` either way ([`JAMBONZ_DEFAULT_TOLERANCE_SECS`] is
/// jambonz's own default). The signature is checked first, so `Stale` means an authentic but
/// old (or early) request: a replay or a skewed clock.
pub fn jambonz_verify(
    secrets: &[&[u8]],
    header: &str,
    body: &[u8],
    now_unix_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = parse_jambonz_header(header)?;
    let mut matched = Choice::from(0);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let expected = jambonz_mac(secret, parsed.t, body);
        for candidate in &parsed.signatures {
            matched |= expected.ct_eq(candidate);
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    let age = i128::from(now_unix_secs) - i128::from(parsed.t);
    if age.abs() > i128::from(tolerance_secs.max(0)) {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn jambonz_mac(secret: &[u8], t: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

struct JambonzHeader {
    t: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_jambonz_header(header: &str) -> Result<JambonzHeader, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut t = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key.trim() {
            "t" => {
                let value = value.trim();
                if t.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed);
                }
                t = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" => {
                if signatures.len() == MAX_JAMBONZ_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                let mut sig = [0u8; 32];
                hex::decode_to_slice(value.trim(), &mut sig)
                    .map_err(|_| SignatureError::Malformed)?;
                signatures.push(sig);
            }
            // Other schemes (a future v2, say) are not ours to judge.
            _ => {}
        }
    }
    match t {
        Some(t) if !signatures.is_empty() => Ok(JambonzHeader { t, signatures }),
        _ => Err(SignatureError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // Vectors from twilio-python's tests/unit/test_request_validator.py (also used by
    // twilio-php and twilio-csharp): token 12345, this URL, these parameters.
    const TOKEN: &[u8] = b"12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn documented_params(number: &str) -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", number),
            ("To", "+18005551212"),
            ("Caller", number),
        ])
    }

    #[test]
    fn twilio_library_test_vector() {
        let params = documented_params("+14158675309");
        assert_eq!(
            twilio_signature(TOKEN, URL, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(twilio_verify(
            &[TOKEN],
            URL,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_docs_example() {
        // The "Webhooks security" page's example prints this signature for +14158675310.
        let params = documented_params("+14158675310");
        assert_eq!(
            twilio_signature(TOKEN, URL, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
    }

    #[test]
    fn twilio_parameter_order_does_not_matter() {
        let mut params = documented_params("+14158675309");
        params.reverse();
        assert!(twilio_verify(
            &[TOKEN],
            URL,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_repeated_names_sorted_and_deduplicated() {
        // twilio-python test_compute_signature_duplicate_multi_dict / twilio-php
        // testValidateWithArrayAndDuplicates.
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            twilio_signature(TOKEN, URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn twilio_no_params_signs_the_url_alone() {
        let mut mac = HmacSha1::new_from_slice(TOKEN).unwrap();
        mac.update(URL.as_bytes());
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(twilio_signature(TOKEN, URL, &[]), expected);
    }

    #[test]
    fn twilio_one_character_changes_are_refused() {
        let params = documented_params("+14158675309");
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        // The header.
        assert!(!twilio_verify(
            &[TOKEN],
            URL,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B9="
        ));
        assert!(!twilio_verify(
            &[TOKEN],
            URL,
            &params,
            "SSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // The URL.
        assert!(!twilio_verify(
            &[TOKEN],
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            good
        ));
        assert!(!twilio_verify(
            &[TOKEN],
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params,
            good
        ));
        // A value, a name, an added parameter, a removed one.
        let mut p = params.clone();
        p[1].1 = "1235".to_owned();
        assert!(!twilio_verify(&[TOKEN], URL, &p, good));
        let mut p = params.clone();
        p[1].0 = "digits".to_owned();
        assert!(!twilio_verify(&[TOKEN], URL, &p, good));
        let mut p = params.clone();
        p.push(("Extra".to_owned(), String::new()));
        assert!(!twilio_verify(&[TOKEN], URL, &p, good));
        let mut p = params.clone();
        p.pop();
        assert!(!twilio_verify(&[TOKEN], URL, &p, good));
        // The token.
        assert!(!twilio_verify(&[b"12346"], URL, &params, good));
    }

    #[test]
    fn twilio_empty_and_malformed_headers() {
        let params = documented_params("+14158675309");
        let check = |h: &str| twilio_check(&[TOKEN], URL, &params, h);
        assert_eq!(check(""), Err(SignatureError::Missing));
        assert_eq!(check("   "), Err(SignatureError::Missing));
        assert_eq!(check("not base64!"), Err(SignatureError::Malformed));
        assert_eq!(
            check("RSOYDt4T1cUTdK1PDd93/VVr8B8"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(check("AAAA"), Err(SignatureError::Malformed));
        assert_eq!(check(&"A".repeat(5000)), Err(SignatureError::Malformed));
        assert_eq!(
            check("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(" RSOYDt4T1cUTdK1PDd93/VVr8B8= "), Ok(()));
    }

    #[test]
    fn twilio_no_usable_token_refuses() {
        let params = documented_params("+14158675309");
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(!twilio_verify(&[], URL, &params, good));
        let empty_sig = twilio_signature(b"", URL, &params);
        assert!(!twilio_verify(&[b""], URL, &params, &empty_sig));
    }

    #[test]
    fn twilio_port_variants_as_the_helpers_do() {
        let params = documented_params("+14158675309");
        // twilio-python test_validation_removes_port_on_https: a signature of the URL without
        // the port is accepted for the URL with any port.
        let with_port = URL.replace(".com", ".com:1234");
        assert!(twilio_verify(
            &[TOKEN],
            &with_port,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // test_validation_removes_port_on_http: the signature of the URL with the port.
        let http_with_port = with_port.replace("https", "http");
        assert!(twilio_verify(
            &[TOKEN],
            &http_with_port,
            &params,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        // test_validation_adds_port_on_https / _on_http: the default port is added.
        assert!(twilio_verify(
            &[TOKEN],
            URL,
            &params,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(twilio_verify(
            &[TOKEN],
            &URL.replace("https", "http"),
            &params,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // And both ways round with our own signer.
        let sig_443 = twilio_signature(
            TOKEN,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
        );
        assert!(twilio_verify(&[TOKEN], URL, &params, &sig_443));
        let sig_plain = twilio_signature(TOKEN, URL, &params);
        assert!(twilio_verify(
            &[TOKEN],
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
            &sig_plain
        ));
        // A different port is not the default: its signature does not pass for the plain URL.
        let sig_8443 = twilio_signature(
            TOKEN,
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &params,
        );
        assert!(!twilio_verify(&[TOKEN], URL, &params, &sig_8443));
    }

    #[test]
    fn twilio_url_variants_cover_the_odd_shapes() {
        let v = |u: &str| twilio_url_variants(u);
        assert_eq!(
            v("https://h.example/p?q=1"),
            (
                "https://h.example/p?q=1".to_owned(),
                "https://h.example:443/p?q=1".to_owned()
            )
        );
        assert_eq!(
            v("http://h.example:8080/p"),
            (
                "http://h.example/p".to_owned(),
                "http://h.example:8080/p".to_owned()
            )
        );
        assert_eq!(
            v("https://h.example"),
            (
                "https://h.example".to_owned(),
                "https://h.example:443".to_owned()
            )
        );
        assert_eq!(
            v("https://h.example?x=a:1"),
            (
                "https://h.example?x=a:1".to_owned(),
                "https://h.example:443?x=a:1".to_owned()
            )
        );
        assert_eq!(
            v("https://u:pw@h.example:444/p"),
            (
                "https://u:pw@h.example/p".to_owned(),
                "https://u:pw@h.example:444/p".to_owned()
            )
        );
        assert_eq!(
            v("https://[::1]/p"),
            (
                "https://[::1]/p".to_owned(),
                "https://[::1]:443/p".to_owned()
            )
        );
        assert_eq!(
            v("https://[::1]:8443/p"),
            (
                "https://[::1]/p".to_owned(),
                "https://[::1]:8443/p".to_owned()
            )
        );
        assert_eq!(
            v("no-scheme"),
            ("no-scheme".to_owned(), "no-scheme".to_owned())
        );
    }

    #[test]
    fn twilio_rotation_accepts_the_previous_token() {
        let params = documented_params("+14158675309");
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(twilio_verify(&[b"new-token", TOKEN], URL, &params, good));
        assert!(twilio_verify(&[TOKEN, b"new-token"], URL, &params, good));
        assert!(!twilio_verify(&[b"new-token"], URL, &params, good));
    }

    #[test]
    fn twilio_json_body_variant() {
        // twilio-python test_validation_of_body_succeeds.
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let url = format!("{URL}&bodySHA256={hash}");
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(twilio_check_json(&[TOKEN], &url, body, sig), Ok(()));
        // Another body under the same URL and signature.
        assert_eq!(
            twilio_check_json(
                &[TOKEN],
                &url,
                br#"{"property": "value", "boolean": false}"#,
                sig
            ),
            Err(SignatureError::Mismatch)
        );
        // Another hash in the URL breaks the signature.
        let other = format!("{URL}&bodySHA256={}", hex::encode(Sha256::digest(b"x")));
        assert_eq!(
            twilio_check_json(&[TOKEN], &other, b"x", sig),
            Err(SignatureError::Mismatch)
        );
        // No hash in the URL.
        assert_eq!(
            twilio_check_json(&[TOKEN], URL, body, sig),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            twilio_check_json(&[TOKEN], &url, body, ""),
            Err(SignatureError::Missing)
        );
    }

    // ---------------------------------------------------------------------------- jambonz

    const SECRET: &[u8] = b"wh_secret_abc123";
    const BODY: &[u8] = br#"{"call_sid":"b6b6","direction":"inbound","from":"15083084809"}"#;
    const T: i64 = 1_700_000_000;

    #[test]
    fn jambonz_signature_format() {
        let header = jambonz_sign(SECRET, BODY, T);
        let (t, v1) = header.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(b"1700000000.");
        mac.update(BODY);
        assert_eq!(
            v1,
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn jambonz_round_trip_and_tolerance_edges() {
        let header = jambonz_sign(SECRET, BODY, T);
        let tol = JAMBONZ_DEFAULT_TOLERANCE_SECS;
        let at = |now: i64| jambonz_verify(&[SECRET], &header, BODY, now, tol);
        assert_eq!(at(T), Ok(()));
        assert_eq!(at(T + tol), Ok(()));
        assert_eq!(at(T - tol), Ok(()));
        assert_eq!(at(T + tol + 1), Err(SignatureError::Stale));
        assert_eq!(at(T - tol - 1), Err(SignatureError::Stale));
        assert_eq!(at(i64::MAX), Err(SignatureError::Stale));
        assert_eq!(at(i64::MIN), Err(SignatureError::Stale));
        // A zero (or negative) tolerance means the very second only.
        assert_eq!(jambonz_verify(&[SECRET], &header, BODY, T, 0), Ok(()));
        assert_eq!(
            jambonz_verify(&[SECRET], &header, BODY, T + 1, -5),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn jambonz_tampering_is_refused() {
        let header = jambonz_sign(SECRET, BODY, T);
        let verify = |h: &str, body: &[u8]| {
            jambonz_verify(&[SECRET], h, body, T, JAMBONZ_DEFAULT_TOLERANCE_SECS)
        };
        // Body: every single-byte change.
        for i in 0..BODY.len() {
            let mut body = BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                verify(&header, &body),
                Err(SignatureError::Mismatch),
                "byte {i}"
            );
        }
        assert_eq!(verify(&header, b""), Err(SignatureError::Mismatch));
        // Timestamp moved (still within tolerance): the MAC covers it.
        let moved = header.replacen("t=1700000000", "t=1700000001", 1);
        assert_eq!(verify(&moved, BODY), Err(SignatureError::Mismatch));
        // Signature: every hex digit changed.
        let sig_start = header.find("v1=").unwrap() + 3;
        for i in sig_start..header.len() {
            let mut h = header.clone().into_bytes();
            h[i] = if h[i] == b'0' { b'1' } else { b'0' };
            let h = String::from_utf8(h).unwrap();
            assert_eq!(verify(&h, BODY), Err(SignatureError::Mismatch), "char {i}");
        }
        // Wrong secret.
        assert_eq!(
            jambonz_verify(&[b"other"], &header, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            jambonz_verify(&[], &header, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
        let empty = jambonz_sign(b"", BODY, T);
        assert_eq!(
            jambonz_verify(&[b""], &empty, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn jambonz_rotation_and_several_signatures() {
        let old = jambonz_sign(b"old-secret", BODY, T);
        assert_eq!(
            jambonz_verify(&[SECRET, b"old-secret"], &old, BODY, T, 300),
            Ok(())
        );
        assert_eq!(
            jambonz_verify(&[SECRET], &old, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
        // A header carrying one v1 per secret (as a sender mid-rotation may): any may match.
        let new = jambonz_sign(SECRET, BODY, T);
        let new_v1 = new.split_once(',').map(|(_, v)| v).unwrap_or_default();
        let both = format!("{old},{new_v1}");
        assert_eq!(jambonz_verify(&[SECRET], &both, BODY, T, 300), Ok(()));
        assert_eq!(
            jambonz_verify(&[b"old-secret"], &both, BODY, T, 300),
            Ok(())
        );
        // Unknown schemes and spaces are tolerated; order does not matter.
        let sig = new_v1.trim_start_matches("v1=");
        let reordered = format!("v0=abc, {new_v1} , t={T}");
        assert_eq!(jambonz_verify(&[SECRET], &reordered, BODY, T, 300), Ok(()));
        let upper = format!("t={T},v1={}", sig.to_ascii_uppercase());
        assert_eq!(jambonz_verify(&[SECRET], &upper, BODY, T, 300), Ok(()));
    }

    #[test]
    fn jambonz_missing_and_malformed_headers() {
        let good = jambonz_sign(SECRET, BODY, T);
        let sig = good.split_once(",v1=").map(|(_, s)| s).unwrap_or_default();
        let verify = |h: &str| jambonz_verify(&[SECRET], h, BODY, T, 300);
        assert_eq!(verify(""), Err(SignatureError::Missing));
        assert_eq!(verify("  "), Err(SignatureError::Missing));
        for bad in [
            "garbage".to_owned(),
            format!("v1={sig}"),
            format!("t={T}"),
            format!("t={T},v1="),
            format!("t={T},v1=zz{}", &sig[2..]),
            format!("t={T},v1={}", &sig[1..]),
            format!("t=-{T},v1={sig}"),
            format!("t=+{T},v1={sig}"),
            format!("t=,v1={sig}"),
            format!("t=1e9,v1={sig}"),
            format!("t=99999999999999999999,v1={sig}"),
            format!("t={T},t={T},v1={sig}"),
            format!("t={T},v1={sig},"),
            format!("t={T},v1={sig},junk"),
            format!("t={T}{}", format!(",v1={sig}").repeat(17)),
            format!("t={T},v1={sig},x={}", "a".repeat(5000)),
        ] {
            assert_eq!(verify(&bad), Err(SignatureError::Malformed), "{bad}");
        }
        let sixteen = format!("t={T}{}", format!(",v1={sig}").repeat(16));
        assert_eq!(verify(&sixteen), Ok(()));
    }

    #[test]
    fn errors_say_why_without_detail() {
        assert_eq!(
            SignatureError::Stale.to_string(),
            "signature timestamp outside the allowed window"
        );
        assert_eq!(
            SignatureError::Mismatch.to_string(),
            "signature does not match"
        );
    }
}
