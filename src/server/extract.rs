//! Reading requests: content negotiation, key/value bodies (JSON, or form-encoded as Django
//! REST Framework accepted them), path segments, the `wait` parameter and the client address.
//! Everything malformed becomes an [`ApiError`] with a message that says what to send instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, FailedToBufferBody},
        ConnectInfo, FromRequestParts, Path,
    },
    http::{header, request::Parts, HeaderMap, HeaderName},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::protocol::{hex_digit, MAX_WAIT_SECS};

/// Whether the client explicitly asked for JSON. The legacy service rendered a single key as
/// text for no `Accept`, `*/*` and `text/plain`; only `application/json` (with q > 0) switches.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/json")
                && !parts.any(|param| {
                    let (name, value) = param.split_once('=').unwrap_or((param, ""));
                    name.trim().eq_ignore_ascii_case("q")
                        && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
        })
}

/// The fields of a key/value body; absent ones are `None`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ItemInput {
    pub key: Option<String>,
    pub value: Option<String>,
}

const BODY_EXAMPLE: &str = r#"{"key": "master_ip", "value": "10.0.0.1"}"#;

/// Parses a key/value body: JSON (also without a `Content-Type`, as `curl -d` sends it) or
/// `application/x-www-form-urlencoded`. A form content type with a JSON body counts as JSON:
/// `curl -d '{...}'` without `-H` sends exactly that.
pub(crate) fn parse_item(headers: &HeaderMap, body: &[u8]) -> Result<ItemInput, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "the body is empty; expected {BODY_EXAMPLE}"
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let looks_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[');
    match essence.as_str() {
        "application/x-www-form-urlencoded" if !looks_like_json => parse_form(body),
        "multipart/form-data" => Err(ApiError::UnsupportedMediaType(format!(
            "multipart bodies are not supported; send JSON like {BODY_EXAMPLE}"
        ))),
        _ => parse_json(body),
    }
}

fn parse_json(body: &[u8]) -> Result<ItemInput, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::BadRequest("the body is not valid UTF-8".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::BadRequest(format!(
            "the body must be a JSON object like {BODY_EXAMPLE}"
        )));
    };
    let mut field = |name: &str| match fields.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "field \"{name}\" must be a string, not {}",
            json_type(&other)
        ))),
    };
    Ok(ItemInput {
        key: field("key")?,
        value: field("value")?,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_form(body: &[u8]) -> Result<ItemInput, ApiError> {
    let mut input = ItemInput::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let slot = match form_decode(name)?.as_str() {
            "key" => &mut input.key,
            "value" => &mut input.value,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(form_decode(value)?);
        }
    }
    Ok(input)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits stays as it is (as browsers and Django do).
fn form_decode(raw: &[u8]) -> Result<String, ApiError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex_digit(raw[i + 1]), hex_digit(raw[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::BadRequest("the form body is not valid UTF-8".into()))
}

/// A body read within the size limit, or the matching error (413 beyond it).
pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    match body {
        Ok(bytes) => Ok(bytes),
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(ApiError::PayloadTooLarge(limit))
        }
        Err(_) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// The `wait` query parameter in whole seconds, 0 to [`MAX_WAIT_SECS`]; 0 when absent.
pub(crate) fn parse_wait(query: Option<&str>) -> Result<Duration, ApiError> {
    let Some(query) = query else {
        return Ok(Duration::ZERO);
    };
    let Some(raw) = query.split('&').find_map(|pair| {
        pair.strip_prefix("wait=")
            .or((pair == "wait").then_some(""))
    }) else {
        return Ok(Duration::ZERO);
    };
    parse_seconds(raw)
        .filter(|wait| *wait <= Duration::from_secs(MAX_WAIT_SECS))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "wait must be a number of seconds from 0 to {MAX_WAIT_SECS}, with at most three \
                 decimals"
            ))
        })
}

/// `12` or `12.345`: whole seconds, optionally with up to three decimals. Fractions let an
/// agent wait exactly its retry slot, so it never stops listening between two long-polls.
fn parse_seconds(raw: &str) -> Option<Duration> {
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || !digits(whole) {
        return None;
    }
    if raw.contains('.') && (fraction.is_empty() || fraction.len() > 3 || !digits(fraction)) {
        return None;
    }
    let millis = format!("{fraction:0<3}").parse::<u64>().ok()?;
    Some(Duration::from_secs(whole.parse().ok()?) + Duration::from_millis(millis))
}

/// Path parameters, with malformed ones (e.g. not UTF-8) answered as a JSON 400. The message
/// leaves the path out: it holds a PIN.
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(_) => Err(ApiError::BadRequest(
                "malformed path: PINs and key names are ASCII letters, digits, '_' and '-'".into(),
            )),
        }
    }
}

/// The client's address: from `trusted_header` when the service runs behind a proxy that sets
/// it (the last entry of a list is the one our proxy added), else the peer of the connection.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    trusted_header: Option<&HeaderName>,
) -> IpAddr {
    let forwarded = trusted_header
        .and_then(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    forwarded
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn typed(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    #[test]
    fn negotiation_defaults_to_text() {
        assert!(!wants_json(&HeaderMap::new()));
        assert!(!wants_json(&accept("*/*")));
        assert!(!wants_json(&accept("text/plain")));
        assert!(!wants_json(&accept("application/*")));
        assert!(wants_json(&accept("application/json")));
        assert!(wants_json(&accept("Application/JSON; charset=utf-8")));
        assert!(wants_json(&accept("text/html, application/json;q=0.9")));
        assert!(!wants_json(&accept("application/json;q=0")));
    }

    #[test]
    fn json_bodies() {
        let body = br#"{"key": "master_ip", "value": "10.0.0.1", "extra": 1}"#;
        let expected = ItemInput {
            key: Some("master_ip".into()),
            value: Some("10.0.0.1".into()),
        };
        assert_eq!(
            parse_item(&typed("application/json"), body).unwrap(),
            expected
        );
        assert_eq!(parse_item(&HeaderMap::new(), body).unwrap(), expected);
        // curl -d without -H: a form content type around a JSON body.
        assert_eq!(
            parse_item(&typed("application/x-www-form-urlencoded"), body).unwrap(),
            expected
        );
        assert_eq!(
            parse_item(&HeaderMap::new(), br#"{"value": "x"}"#).unwrap(),
            ItemInput {
                key: None,
                value: Some("x".into())
            }
        );
    }

    #[test]
    fn bad_json_bodies_say_why() {
        let message = |body: &[u8]| match parse_item(&HeaderMap::new(), body) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(message(b"").contains("empty"));
        assert!(message(b"{").contains("not valid JSON"));
        assert!(message(b"[1]").contains("JSON object"));
        assert!(message(br#"{"key": 1}"#).contains("must be a string, not a number"));
        assert!(message(br#"{"key": "k", "value": null}"#).contains("not null"));
        assert!(message(b"{\"key\": \"\xff\"}").contains("UTF-8"));
    }

    #[test]
    fn form_bodies() {
        let headers = typed("application/x-www-form-urlencoded; charset=utf-8");
        assert_eq!(
            parse_item(&headers, b"key=master_ip&value=10.0.0.1").unwrap(),
            ItemInput {
                key: Some("master_ip".into()),
                value: Some("10.0.0.1".into())
            }
        );
        assert_eq!(
            parse_item(&headers, b"value=a+b%20c%2&key=k&value=ignored")
                .unwrap()
                .value
                .as_deref(),
            Some("a b c%2")
        );
        assert!(matches!(
            parse_item(&headers, b"key=k&value=%ff"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_item(&typed("multipart/form-data; boundary=x"), b"--x"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn wait_parameter() {
        let ms = Duration::from_millis;
        assert_eq!(parse_wait(None).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("x=1")).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("wait=0")).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("a=b&wait=60")).unwrap(), ms(60_000));
        assert_eq!(parse_wait(Some("wait=1.5")).unwrap(), ms(1_500));
        assert_eq!(parse_wait(Some("wait=2.345")).unwrap(), ms(2_345));
        assert_eq!(parse_wait(Some("wait=0.05")).unwrap(), ms(50));
        assert_eq!(parse_wait(Some("wait=60.000")).unwrap(), ms(60_000));
        for bad in [
            "wait=61",
            "wait=60.001",
            "wait=-1",
            "wait=+5",
            "wait=1.",
            "wait=.5",
            "wait=1.2345",
            "wait=1e3",
            "wait=",
            "wait",
            "wait=abc",
            "wait=0000000000000000001",
        ] {
            assert!(parse_wait(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_address_from_trusted_header_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 192.0.2.7"),
        );
        let mut extensions = axum::http::Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        let name = HeaderName::from_static("x-forwarded-for");
        assert_eq!(
            client_ip(&headers, &extensions, Some(&name)),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&headers, &extensions, None),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
