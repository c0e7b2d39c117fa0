//! The REST API (JSON) on the API listener, for tenants and the operator: `/v1/usage`,
//! `/v1/bills`, `/v1/accounts`, `/v1/quotas`. Every request carries a token scoped to an
//! account ([`scope`]); what it returns is filtered to that account and what lies under it,
//! and asking for another is refused (403), so a team sees its own usage and no one else's.

pub mod scope;

use std::sync::{Arc, Mutex};

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    accounts::Accounts,
    bill,
    quota::admission::Admission,
    rate::PriceBook,
    receive::now_ns,
    store::{self, SidePolicy, Store},
};
use scope::{ApiTokens, Scope};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub tokens: ApiTokens,
    pub store: Arc<Mutex<Box<dyn Store>>>,
    pub book: Arc<PriceBook>,
    pub accounts: Arc<Accounts>,
    pub admission: Arc<Admission>,
    pub policy: SidePolicy,
}

/// One error type for every route: a status and a message, as JSON.
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    BadRequest(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid `authorization: Bearer <token>` is required".to_string(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

#[derive(Deserialize)]
struct Params {
    /// `YYYY-MM`; default: the current month.
    period: Option<String>,
    /// Narrow to an account within the token's scope (`team:search`).
    account: Option<String>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/bills", get(bills))
        .route("/v1/accounts", get(accounts))
        .route("/v1/quotas", get(quotas))
        .with_state(state)
}

/// The scope a request may read: its token's, or a narrower account it asks for.
fn scope_of(state: &ApiState, headers: &HeaderMap, params: &Params) -> Result<Scope, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let granted = state.tokens.scope(header).ok_or(ApiError::Unauthorized)?;
    let Some(asked) = &params.account else {
        return Ok(granted);
    };
    let asked = Scope::parse(asked).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "account {asked:?}: write org:<id>, team:<id> or user:<id>"
        ))
    })?;
    if granted.contains(&asked, &state.accounts) {
        Ok(asked)
    } else {
        Err(ApiError::Forbidden(
            "this token may not read that account".into(),
        ))
    }
}

fn period(params: &Params) -> Result<String, ApiError> {
    let period = params
        .period
        .clone()
        .unwrap_or_else(|| store::period_of(now_ns()));
    chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("period {period:?}: use YYYY-MM")))?;
    Ok(period)
}

/// Runs a store read on a blocking thread.
async fn read<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&mut dyn Store) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        f(store.as_mut())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn usage(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope_of(&state, &headers, &params)?;
    let period = period(&params)?;
    let policy = state.policy;
    let asked = period.clone();
    let rows = read(&state, move |s| s.usage(&asked, policy)).await?;
    let rows: Vec<Value> = rows
        .iter()
        .filter(|r| scope.covers(&r.account))
        .map(|r| {
            json!({
                "org": r.account.org, "team": r.account.team, "user": r.account.user,
                "model": r.model, "price_id": r.price_id, "requests": r.requests,
                "tokens": {
                    "input": r.quantities[0], "cached_input": r.quantities[1],
                    "cache_creation_input": r.quantities[2], "output": r.quantities[3],
                    "reasoning": r.quantities[4],
                },
                "gpu_time_us": r.gpu_time_us,
            })
        })
        .collect();
    Ok(Json(json!({ "period": period, "usage": rows })))
}

async fn bills(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope_of(&state, &headers, &params)?;
    let period = period(&params)?;
    let (policy, asked) = (state.policy, period.clone());
    let (rows, finalized) = read(&state, move |s| {
        Ok((s.usage(&asked, policy)?, s.is_finalized(&asked)?))
    })
    .await?;
    let bill = bill::compute(&period, finalized, &rows, &state.book, &state.accounts);
    let view = match &scope {
        Scope::Admin => serde_json::to_value(&bill.orgs),
        Scope::Org(org) => serde_json::to_value(
            bill.orgs
                .iter()
                .filter(|o| o.org == *org)
                .collect::<Vec<_>>(),
        ),
        // A team or user sees its share of its enterprise's bill, not the enterprise's.
        Scope::Team(team) => serde_json::to_value(
            bill.orgs
                .iter()
                .flat_map(|o| o.teams.iter().filter(|t| t.account == *team))
                .collect::<Vec<_>>(),
        ),
        Scope::User(user) => serde_json::to_value(
            bill.orgs
                .iter()
                .flat_map(|o| {
                    o.users
                        .iter()
                        .filter(|u| u.account.rsplit_once('/').is_some_and(|(_, id)| id == user))
                })
                .collect::<Vec<_>>(),
        ),
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let key = if matches!(scope, Scope::Admin | Scope::Org(_)) {
        "bills"
    } else {
        "shares"
    };
    Ok(Json(json!({
        "period": bill.period, "status": bill.status, "currency": bill.currency, key: view,
    })))
}

async fn accounts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope_of(&state, &headers, &params)?;
    let accounts = &state.accounts;
    let users: Vec<Value> = accounts
        .users
        .iter()
        .filter_map(|(user, team)| {
            let org = accounts.teams.get(team)?;
            let account = crate::accounts::Account {
                org: org.clone(),
                team: team.clone(),
                user: user.clone(),
            };
            scope
                .covers(&account)
                .then(|| json!({"org": org, "team": team, "user": user}))
        })
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn quotas(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope_of(&state, &headers, &params)?;
    let quotas = state.admission.quotas();
    let states = state.admission.states();
    let visible: Vec<Value> = states
        .iter()
        .filter(|s| {
            Scope::parse(&quotas[s.index].account)
                .is_some_and(|q| scope.contains(&q, &state.accounts))
        })
        .map(|s| {
            let q = &quotas[s.index];
            json!({
                "account": q.account, "period": q.period, "mode": q.mode,
                "limit_tokens": q.tokens, "limit_amount": q.amount.map(|a| a.to_string()),
                "window": s.window, "used_tokens": s.used_tokens,
                "used_amount": s.used_amount.to_string(), "exceeded": s.exceeded,
            })
        })
        .collect();
    Ok(Json(json!({ "quotas": visible })))
}
