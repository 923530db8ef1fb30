//! sqlx errors and row decoding, mapped to the port's `StoreError`.

use ivrauth_core::ports::StoreError;

/// Map a sqlx error: unique violations are `Conflict`, the rest `Backend` (operator log text).
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Scopes are stored space-separated, so a scope must be non-empty and hold no whitespace.
pub(crate) fn join_scopes(scopes: &[String]) -> Result<String, StoreError> {
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.chars().any(char::is_whitespace))
    {
        return Err(StoreError::Backend(format!(
            "invalid scope {bad:?}: scopes must be non-empty and contain no whitespace"
        )));
    }
    Ok(scopes.join(" "))
}

pub(crate) fn split_scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}
