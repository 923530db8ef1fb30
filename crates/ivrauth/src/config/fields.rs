//! How each kind of configuration value is read: the `deserialize_with` functions of the
//! section structs. Not where keys are named or layered (the section structs and `load`).
//!
//! Every value may come from the file (typed TOML) or from an `IVRAUTH_*` variable (text, or
//! a list of texts for list-valued keys), so numbers and booleans are also accepted as text.
//! Problems are phrased here and never contain the value: a type mismatch is reported by
//! what was expected ("expected an integer"), a bad value by the rule it broke.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;

use ivrauth_connect::oauth2::Algorithm;
use ivrauth_connect::HttpConfig;
use ivrauth_core::secret::Secret;
use ivrauth_server::app::seal::{SealError, SessionKeys};
use ivrauth_server::calls::vxml::access::Cidr;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Accepts integers, and text holding one (from the environment).
struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(i128::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<i128, E> {
        Ok(v)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<i128, E> {
        Ok(i128::try_from(v).unwrap_or(i128::MAX))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom("expected an integer"))
    }
}

fn integer<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    let n = d.deserialize_any(IntVisitor)?;
    if n < i128::from(min) || n > i128::from(max) {
        return Err(de::Error::custom(format!(
            "must be between {min} and {max}"
        )));
    }
    u64::try_from(n).map_err(|_| de::Error::custom(format!("must be between {min} and {max}")))
}

fn convert<T: TryFrom<u64>, E: de::Error>(n: u64, max: u64) -> Result<T, E> {
    T::try_from(n).map_err(|_| E::custom(format!("must be at most {max}")))
}

/// An integer in `MIN..=MAX`.
pub fn between<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    convert(integer(d, MIN, MAX)?, MAX)
}

/// Like [`between`], for an optional key.
pub fn some_between<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    between::<D, T, MIN, MAX>(d).map(Some)
}

/// A limit in `1..=MAX`; 0 is refused by name (it would switch the limit off).
pub fn limit<'de, D, T, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    match integer(d, 0, MAX)? {
        0 => Err(de::Error::custom(format!(
            "must be at least 1: a limit of 0 would leave the server without it (largest: {MAX})"
        ))),
        n => convert(n, MAX),
    }
}

/// `true`/`false`; from the environment also `1`/`0` and `yes`/`no`.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(E::custom("expected true or false")),
            }
        }
    }
    d.deserialize_any(V)
}

/// Any text.
fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_any(V)
}

/// Text that is not blank.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(s)
}

/// Like [`text`], for a key with no default.
pub fn some_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d).map(Some)
}

/// Like [`text`], trimmed.
pub fn some_trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d).map(|s| Some(s.trim().to_owned()))
}

/// Text; blank means "not set".
pub fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d)?;
    Ok((!s.trim().is_empty()).then_some(s))
}

/// Like [`optional_text`], trimmed.
pub fn optional_trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(optional_text(d)?.map(|s| s.trim().to_owned()))
}

/// A path; blank means "not set".
pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_text(d)?.map(PathBuf::from))
}

/// A path that is not blank.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    text(d).map(PathBuf::from)
}

/// A secret that is not empty, held as [`Secret`] from the moment it is read.
pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
    let s = Secret::new(string(d)?);
    if s.expose().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(Some(s))
}

/// `host:port`.
pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    string(d)?
        .trim()
        .parse()
        .map_err(|_| de::Error::custom("expected an address such as 127.0.0.1:8080"))
}

/// An absolute URL with one of `schemes`, trimmed.
fn url<'de, D: Deserializer<'de>>(d: D, schemes: &[&str]) -> Result<String, D::Error> {
    let s = text(d)?;
    match url::Url::parse(s.trim()) {
        Ok(u) if schemes.contains(&u.scheme()) && u.has_host() => Ok(s.trim().to_owned()),
        _ => Err(de::Error::custom(format!(
            "expected a {} URL",
            schemes.join(" or ")
        ))),
    }
}

/// An `ldaps://` or `ldap://` URL.
pub fn ldap_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    url(d, &["ldap", "ldaps"]).map(Some)
}

/// An `https://` or `http://` URL.
pub fn web_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    url(d, &["https", "http"]).map(Some)
}

/// Like [`web_url`]; blank means "not set".
pub fn optional_web_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    url(
        de::value::StrDeserializer::<D::Error>::new(&s),
        &["https", "http"],
    )
    .map(Some)
}

/// Like [`optional_web_url`], without a trailing `/` (a base for callback URLs).
pub fn optional_base_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(optional_web_url(d)?.map(|u| u.trim_end_matches('/').to_owned()))
}

/// `[server] public_url`: an http(s) URL without a trailing `/`; blank means "not set".
pub fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            Ok(Some(s.trim_end_matches('/').to_owned()))
        }
        _ => Err(de::Error::custom("expected an http(s) URL")),
    }
}

/// `[twilio] rest_base_url`: https (plain http to loopback only), without a trailing `/`.
pub fn rest_base_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = url(d, &["https", "http"])?;
    if !ivrauth_core::http::secure_transport(&url) {
        return Err(de::Error::custom(
            "must be https (plain http only to a loopback address): the REST password is sent to it",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A JSON pointer that must be set.
pub fn pointer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    optional_pointer(d)?.ok_or_else(|| de::Error::custom("must not be empty"))
}

/// A JSON pointer; blank switches it off.
pub fn optional_pointer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') {
        return Err(de::Error::custom("expected a JSON pointer such as /0/name"));
    }
    Ok(Some(s.to_owned()))
}

/// A list of strings (from the environment: comma-separated, already split).
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element_seed(ListItem)? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// One entry of a list of strings; anything else is "expected a list of strings".
struct ListItem;

impl<'de> de::DeserializeSeed<'de> for ListItem {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        d.deserialize_any(V)
    }
}

/// `[http] allowed_hosts`: `["*"]` (any host) is `None`.
pub fn allowed_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let hosts = strings(d)?;
    if hosts.iter().any(|h| h == "*") {
        if hosts.len() > 1 {
            return Err(de::Error::custom(
                "\"*\" (any host) cannot be combined with other entries",
            ));
        }
        return Ok(None);
    }
    let bad: Vec<String> = hosts
        .iter()
        .filter_map(|h| HttpConfig::check_allowed_host(h).err())
        .map(|e| e.to_string())
        .collect();
    if !bad.is_empty() {
        return Err(de::Error::custom(bad.join("; ")));
    }
    Ok(Some(hosts))
}

/// `[twilio] account_sids`.
pub fn account_sids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let sids = strings(d)?;
    if sids
        .iter()
        .any(|sid| sid.trim().is_empty() || sid.chars().any(char::is_whitespace))
    {
        return Err(de::Error::custom(
            "entries must be Account SIDs (AC...), without spaces",
        ));
    }
    Ok(sids)
}

/// `[voicexml] basic_username`: HTTP Basic forbids `:` in it.
pub fn basic_username<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let user = text(d)?;
    if user.contains(':') {
        return Err(de::Error::custom(
            "must not contain `:` (HTTP Basic separates the user name from the password with it)",
        ));
    }
    Ok(Some(user))
}

/// IP addresses and CIDR ranges; every bad entry is named (these are not secrets).
pub fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let mut ranges = Vec::new();
    let mut bad = Vec::new();
    for entry in strings(d)? {
        match entry.parse::<Cidr>() {
            Ok(c) => ranges.push(c),
            Err(e) => bad.push(e.to_string()),
        }
    }
    if bad.is_empty() {
        Ok(ranges)
    } else {
        Err(de::Error::custom(bad.join("; ")))
    }
}

/// `[identity.oauth2.jwt] algorithms`: asymmetric ones only.
pub fn algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
    let names = strings(d)?;
    if names.is_empty() {
        return Err(de::Error::custom("must list at least one algorithm"));
    }
    names
        .iter()
        .map(|name| {
            let alg = Algorithm::from_str(name.trim())
                .map_err(|_| de::Error::custom(format!("unknown algorithm {name:?}")))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(de::Error::custom(format!(
                    "{name} is symmetric; only RS*, PS*, ES* and EdDSA are accepted"
                )));
            }
            Ok(alg)
        })
        .collect()
}

/// `[calls] session_keys`: every entry must decode to 32 bytes. Problems name the entry by
/// its position (from 1), never its content.
pub fn session_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret<String>>, D::Error> {
    let entries: Vec<Secret<String>> = strings(d)?.into_iter().map(Secret::new).collect();
    let texts: Vec<&str> = entries.iter().map(|k| k.expose().as_str()).collect();
    match SessionKeys::from_base64(&texts) {
        Ok(_) => Ok(entries),
        Err(e) => Err(de::Error::custom(session_key_problem(&e, entries.len()))),
    }
}

fn session_key_problem(e: &SealError, count: usize) -> String {
    const HINT: &str =
        "each entry is 32 random bytes in base64, such as the output of `openssl rand -base64 32`";
    match *e {
        SealError::NoKeys => format!(
            "must list at least one key (leave the key out to use a key generated in the data directory); {HINT}"
        ),
        SealError::KeyEncoding { index } => format!(
            "entry #{} of {count} is not base64; {HINT}",
            index + 1
        ),
        SealError::KeyLength { index, len } => format!(
            "entry #{} of {count} decodes to {len} bytes, not 32; {HINT}",
            index + 1
        ),
        SealError::DuplicateKey { index } => format!(
            "entry #{} of {count} repeats an earlier entry",
            index + 1
        ),
        ref other => other.to_string(),
    }
}

/// One of a fixed set of names (`[identity] provider`, `[simulate] identity`, ...). The
/// unknown name is quoted: these are names, never secrets, and the typo is the clue.
pub fn one_of<'de, D, T: Copy>(
    d: D,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let given = string(d)?;
    let given = given.trim();
    all.iter()
        .copied()
        .find(|v| name(*v) == given)
        .ok_or_else(|| {
            let names: Vec<String> = all.iter().map(|v| format!("\"{}\"", name(*v))).collect();
            let expected = match names.split_last() {
                _ if names.len() >= 4 => format!("one of {}", names.join(", ")),
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            de::Error::custom(format!("unknown {what} {given:?} (expected {expected})"))
        })
}
