//! The Flow API and simulation routes (`/api/v2/flows...`). A stub for now: the routes are
//! added here and merged into [`crate::router`] by [`routes`].

use axum::Router;

use crate::AppState;

/// Routes of the Flow API.
pub fn routes() -> Router<AppState> {
    Router::new()
}
