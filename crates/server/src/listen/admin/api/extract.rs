//! The API's extractors and its one mapping of failures to statuses: a body, a path or a
//! query that does not parse is a 400 with a message in our `{"error": ...}` body (axum's
//! own rejections are plain text), a body over `[admin] max_body_bytes` stays a 413
//! (RFC 9110 15.5.14), and an operation's [`OpError`] becomes 400, 404, 409, 503 or 500.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::state::error;
use crate::ops::OpError;

/// A JSON body, required.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Response {
    // 413 says the body is too large; everything else is a request to write again.
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, rejection.body_text())
}

/// A JSON body that may be left out (or empty): then `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            error(if status.is_client_error() { status } else { StatusCode::BAD_REQUEST }, rejection.body_text())
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("Failed to parse the request body as JSON: {e}")))
    }
}

/// The path's parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> Response {
    error(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// The query string's parameters.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// An operation's failure as the API answers it.
#[derive(Debug)]
pub struct ApiError(pub OpError);

impl From<OpError> for ApiError {
    fn from(error: OpError) -> ApiError {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Unavailable(m) => {
                tracing::warn!(error = %m, "admin API: the store is unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            OpError::Failed(m) => {
                tracing::error!(error = %m, "admin API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error(status, self.0.message())
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// 200 with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> ApiResult {
    Ok(Json(crate::ops::to_object(value)).into_response())
}

/// 201 Created with a JSON body (RFC 9110 15.3.2).
pub fn created<T: Serialize>(value: &T) -> ApiResult {
    Ok((StatusCode::CREATED, Json(crate::ops::to_object(value))).into_response())
}
