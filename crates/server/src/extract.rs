//! Request extractors that answer bad input with `400 invalid_request` naming
//! the field, instead of axum's plain-text rejections.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body. An empty body means `T::default()` (every create field is
/// optional); anything else must be `application/json` and match `T` exactly.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type =
            req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.to_ascii_lowercase());
        let body = bytes::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("the request body is larger than this route takes".into())
            } else {
                ApiError::InvalidRequest { field: None, message: format!("could not read the body: {e}") }
            }
        })?;
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(ApiJson(T::default()));
        }
        let is_json = content_type
            .as_deref()
            .map(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::InvalidRequest {
                field: None,
                message: format!(
                    "Content-Type must be application/json (got {})",
                    content_type.as_deref().unwrap_or("none")
                ),
            });
        }
        parse_json(&body).map(ApiJson)
    }
}

/// Parses JSON into `T`, naming the offending field on failure.
///
/// Every body is a JSON object. A number written with a zero fraction (`8080.0`,
/// `1e3`) is an integer, as JSON Schema counts it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.find(" at line ").map_or(msg.as_str(), |i| &msg[..i]).to_string();
        ApiError::InvalidRequest { field: None, message: format!("malformed JSON body: {msg}") }
    })?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest { field: None, message: "the body must be a JSON object".into() });
    }
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let msg = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::InvalidRequest { field: None, message: format!("malformed JSON body: {msg}") };
        }
        // serde reports an unknown field at its parent's path; name the field itself.
        let named = msg.strip_prefix("unknown field `").or_else(|| msg.strip_prefix("missing field `"));
        let field = match named.and_then(|r| r.split('`').next()) {
            Some(name) if path == "." => name.to_string(),
            // Depending on where serde stops, the path may already end with the field.
            Some(name) if path == name || path.ends_with(&format!(".{name}")) => path,
            Some(name) => format!("{path}.{name}"),
            None if path == "." => String::new(),
            None => path,
        };
        let message = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        if field.is_empty() {
            ApiError::InvalidRequest { field: None, message: format!("invalid body: {message}") }
        } else {
            ApiError::InvalidRequest { message: format!("invalid `{field}`: {message}"), field: Some(field) }
        }
    })
}

/// Rewrites every float without a fraction (within the 64-bit integer range) as an integer.
fn integral_floats_to_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                if (0.0..18_446_744_073_709_551_615.0).contains(&f) {
                    *v = Value::from(f as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// Query parameters, with `400 invalid_request` naming the parameter on failure.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|err| {
            let field = err.path().to_string();
            let message = err.into_inner().to_string();
            let field = match message.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
                Some(name) => name.to_string(),
                None => field,
            };
            ApiError::InvalidRequest {
                message: format!("invalid query parameter `{field}`: {message}"),
                field: Some(field),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_json;
    use crate::error::ApiError;
    use berth_api_types::{CreateInstance, ExecRequest};

    fn field<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &str) -> Option<String> {
        match parse_json::<T>(body.as_bytes()).unwrap_err() {
            ApiError::InvalidRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_once() {
        assert_eq!(field::<CreateInstance>(r#"{"colour":"red"}"#).as_deref(), Some("colour"));
        assert_eq!(field::<CreateInstance>(r#"{"budget":{"cap":1}}"#).as_deref(), Some("budget.cap"));
        assert_eq!(field::<CreateInstance>(r#"{"size":"big"}"#).as_deref(), Some("size"));
        assert_eq!(field::<CreateInstance>(r#"{"lifecycle":{}}"#).as_deref(), Some("lifecycle.mode"));
        assert_eq!(field::<ExecRequest>(r#"{"stdin":"x"}"#).as_deref(), Some("command"));
        assert_eq!(field::<CreateInstance>(r#"{"name": "#), None, "syntax errors name no field");
        assert_eq!(field::<CreateInstance>(r#"[null, null]"#), None, "a body is an object");
        assert_eq!(field::<CreateInstance>(r#"{"size": 2.5}"#).as_deref(), Some("size"));
    }

    #[test]
    fn integral_floats_are_integers() {
        let body: CreateInstance = parse_json(br#"{"size": 2.0, "expose": [8080.0, 9e3]}"#).unwrap();
        assert_eq!(body.size, Some(2));
        assert_eq!(body.expose, Some(serde_json::json!([8080, 9000])));
    }
}
