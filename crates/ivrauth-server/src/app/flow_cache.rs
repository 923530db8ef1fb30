//! Compiled flow versions, so that a run does not re-validate its document. Where a stored
//! flow is compiled for running (the Flow API compiles documents it is sent itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ivrauth_core::flow::{compile, Flow};
use ivrauth_core::ports::StoredFlow;

/// A stored flow version that no longer compiles (a validator change refusing what it
/// once accepted). Internal: the text is for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StaleFlow(String);

/// Compiled flows by (id, version). Versions are immutable, so entries never go stale.
#[derive(Default)]
pub struct FlowCache {
    inner: Mutex<HashMap<(String, i64), Arc<Flow>>>,
}

/// At most this many compiled flows are kept; beyond it the cache starts over.
const CACHE_LIMIT: usize = 1_000;

impl FlowCache {
    /// The compiled flow version, if it is cached.
    pub fn get(&self, id: &str, version: i64) -> Option<Arc<Flow>> {
        let map = self.inner.lock().ok()?;
        map.get(&(id.to_owned(), version)).cloned()
    }

    /// The compiled form of a stored flow version.
    pub fn get_or_compile(&self, stored: &StoredFlow) -> Result<Arc<Flow>, StaleFlow> {
        let key = (stored.id.clone(), stored.version);
        if let Ok(map) = self.inner.lock() {
            if let Some(f) = map.get(&key) {
                return Ok(f.clone());
            }
        }
        let flow = Arc::new(compile_text(&stored.document)?);
        if let Ok(mut map) = self.inner.lock() {
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            map.insert(key, flow.clone());
        }
        Ok(flow)
    }
}

/// Compile a document that was valid when it was stored.
fn compile_text(text: &str) -> Result<Flow, StaleFlow> {
    let doc = ivrauth_proto::flow::parse_document(text)
        .map_err(|e| StaleFlow(format!("stored flow no longer parses: {e}")))?;
    compile(&doc).map(|(flow, _)| flow).map_err(|r| {
        StaleFlow(format!(
            "stored flow no longer validates: {} errors",
            r.errors.len()
        ))
    })
}
