//! Reading requests: key/value bodies (JSON, or form-encoded as Django
//! REST Framework accepted them), path segments, the `wait` parameter and the client address.
//! Everything malformed becomes an [`ApiError`] with a message that says what to send instead.

use std::collections::HashMap;
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
use serde_json::{value::RawValue, Value};

use super::error::{ApiError, FieldError};
use crate::protocol::{self, hex_digit, ItemError, MAX_WAIT_SECS};

/// The fields of a key/value body, trimmed and checked; absent ones are `None`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ItemInput {
    pub key: Option<String>,
    pub value: Option<String>,
}

const BODY_EXAMPLE: &str = r#"{"key": "master_ip", "value": "10.0.0.1"}"#;

/// A field as the body gave it, before it is checked.
type RawField = Option<Result<String, FieldError>>;

/// Parses a key/value body: JSON (also without a `Content-Type`, as `curl -d` sends it) or
/// `application/x-www-form-urlencoded`. A form content type with a JSON body counts as JSON:
/// `curl -d '{...}'` without `-H` sends exactly that.
///
/// Fields are read as DRF's `CharField` read them (PROTOCOL.md part 4): text is trimmed of
/// surrounding whitespace, a JSON number is taken as its text (`5` -> `"5"`), booleans,
/// objects, arrays and null are refused. `required` names the fields that must be there.
/// Every field's problem is reported, not only the first one's.
pub(crate) fn parse_item(
    headers: &HeaderMap,
    body: &[u8],
    required: &[&'static str],
) -> Result<ItemInput, ApiError> {
    let (key, value) = if body.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
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
            "application/x-www-form-urlencoded" if !looks_like_json => parse_form(body)?,
            "multipart/form-data" => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "multipart bodies are not supported; send JSON like {BODY_EXAMPLE}"
                )))
            }
            _ => parse_json(body)?,
        }
    };
    let mut problems = Vec::new();
    let mut check =
        |name: &'static str, field: RawField, validate: fn(&str) -> Result<(), ItemError>| {
            let checked = match field {
                None if required.contains(&name) => Err(FieldError::Required),
                None => return None,
                Some(Ok(text)) => validate(&text).map(|()| text).map_err(FieldError::Invalid),
                Some(Err(problem)) => Err(problem),
            };
            checked
                .map_err(|problem| problems.push((name, problem)))
                .ok()
        };
    let input = ItemInput {
        key: check("key", key, protocol::validate_key_name),
        value: check("value", value, protocol::validate_value),
    };
    if problems.is_empty() {
        Ok(input)
    } else {
        Err(ApiError::InvalidFields(problems))
    }
}

/// Python's `str.strip()` without arguments, which DRF's `trim_whitespace` calls: Unicode
/// whitespace plus the ASCII separators U+001C to U+001F.
fn trim(text: &str) -> String {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .to_string()
}

fn parse_json(body: &[u8]) -> Result<(RawField, RawField), ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::BadRequest("the body is not valid UTF-8".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!(
            "the body must be a JSON object like {BODY_EXAMPLE}"
        )));
    }
    // Again as raw text, for numbers: `1.50` stays "1.50" instead of going through a float.
    // Of a repeated field the last one counts, as in Python's json module.
    let mut fields: HashMap<String, &RawValue> = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    let mut field = |name: &str| -> RawField {
        let raw = fields.remove(name)?;
        Some(match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::String(text)) => Ok(trim(&text)),
            Ok(Value::Number(_)) => Ok(raw.get().to_string()),
            Ok(Value::Null) => Err(FieldError::Null),
            Ok(other) => Err(FieldError::NotText(json_type(&other))),
            // It parsed a moment ago as part of the whole body.
            Err(_) => Err(FieldError::NotText("unreadable")),
        })
    };
    Ok((field("key"), field("value")))
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

fn parse_form(body: &[u8]) -> Result<(RawField, RawField), ApiError> {
    let (mut key, mut value): (RawField, RawField) = (None, None);
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, text) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let slot = match form_decode(name)?.as_str() {
            "key" => &mut key,
            "value" => &mut value,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(Ok(trim(&form_decode(text)?)));
        }
    }
    Ok((key, value))
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

/// `min=N` of a member-list long-poll: how many members to wait for; 0 (nothing to wait
/// for) without it.
pub(crate) fn parse_min(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("min="))
    else {
        return Ok(0);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
        .map(|min| min as usize)
        .ok_or_else(|| ApiError::BadRequest("min must be a whole number of members".into()))
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
/// it, else the peer of the connection. The last entry counts, of the last line: a proxy
/// appends its entry to a list, or adds a line of its own after any the client sent.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    trusted_header: Option<&HeaderName>,
) -> IpAddr {
    let forwarded = trusted_header
        .and_then(|name| headers.get_all(name).iter().next_back())
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

    fn typed(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    const BOTH: &[&str] = &["key", "value"];

    fn item(key: &str, value: &str) -> ItemInput {
        ItemInput {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    #[test]
    fn json_bodies() {
        let body = br#"{"key": "master_ip", "value": "10.0.0.1", "extra": 1}"#;
        let expected = item("master_ip", "10.0.0.1");
        assert_eq!(
            parse_item(&typed("application/json"), body, BOTH).unwrap(),
            expected
        );
        assert_eq!(parse_item(&HeaderMap::new(), body, BOTH).unwrap(), expected);
        // curl -d without -H: a form content type around a JSON body.
        assert_eq!(
            parse_item(&typed("application/x-www-form-urlencoded"), body, BOTH).unwrap(),
            expected
        );
        assert_eq!(
            parse_item(&HeaderMap::new(), br#"{"value": "x"}"#, &["value"]).unwrap(),
            ItemInput {
                key: None,
                value: Some("x".into())
            }
        );
    }

    #[test]
    fn fields_are_read_as_drf_read_them() {
        let parse = |body: &str| parse_item(&HeaderMap::new(), body.as_bytes(), BOTH);
        assert_eq!(
            parse(r#"{"key": " master_ip ", "value": " 10.0.0.6 "}"#).unwrap(),
            item("master_ip", "10.0.0.6")
        );
        assert_eq!(
            parse(r#"{"key": "k", "value": "10.0.0.5\n"}"#).unwrap(),
            item("k", "10.0.0.5")
        );
        assert_eq!(
            parse(r#"{"key": "k", "value": "\u001f\u00a0x y\u3000"}"#).unwrap(),
            item("k", "x y")
        );
        assert_eq!(
            parse(r#"{"key": 5, "value": 1.5}"#).unwrap(),
            item("5", "1.5")
        );
        assert_eq!(
            parse(r#"{"key": "k", "value": 1.50e2}"#).unwrap(),
            item("k", "1.50e2")
        );
        assert_eq!(
            parse(r#"{"key": "k", "value": "a", "value": "b"}"#).unwrap(),
            item("k", "b")
        );
    }

    fn problems(body: &[u8]) -> Vec<(&'static str, FieldError)> {
        match parse_item(&HeaderMap::new(), body, BOTH) {
            Err(ApiError::InvalidFields(problems)) => problems,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_reported() {
        assert_eq!(
            problems(b""),
            [
                ("key", FieldError::Required),
                ("value", FieldError::Required)
            ]
        );
        assert_eq!(
            problems(br#"{"key": "k", "value": "   "}"#),
            [("value", FieldError::Invalid(ItemError::EmptyValue))]
        );
        assert_eq!(
            problems(br#"{"key": true, "value": null}"#),
            [
                ("key", FieldError::NotText("a boolean")),
                ("value", FieldError::Null)
            ]
        );
        assert_eq!(
            problems(br#"{"key": {}, "value": [1]}"#),
            [
                ("key", FieldError::NotText("an object")),
                ("value", FieldError::NotText("an array"))
            ]
        );
        assert_eq!(
            problems(br#"{"key": "a b", "value": "v"}"#),
            [("key", FieldError::Invalid(ItemError::KeyCharacters))]
        );
    }

    #[test]
    fn bad_json_bodies_say_why() {
        let message = |body: &[u8]| match parse_item(&HeaderMap::new(), body, BOTH) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(message(b"{").contains("not valid JSON"));
        assert!(message(b"[1]").contains("JSON object"));
        assert!(message(b"{\"key\": \"\xff\"}").contains("UTF-8"));
    }

    #[test]
    fn form_bodies() {
        let headers = typed("application/x-www-form-urlencoded; charset=utf-8");
        assert_eq!(
            parse_item(&headers, b"key=master_ip&value=10.0.0.1", BOTH).unwrap(),
            item("master_ip", "10.0.0.1")
        );
        assert_eq!(
            parse_item(&headers, b"key=+k+&value=a+b%20c%2&value=ignored", BOTH).unwrap(),
            item("k", "a b c%2")
        );
        assert!(matches!(
            parse_item(&headers, b"key=k&value=+%0A", BOTH),
            Err(ApiError::InvalidFields(_))
        ));
        assert!(matches!(
            parse_item(&headers, b"key=k&value=%ff", BOTH),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_item(&typed("multipart/form-data; boundary=x"), b"--x", BOTH),
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
        // A client's forged line first, the proxy's own line after it: the proxy's counts.
        let mut two_lines = HeaderMap::new();
        two_lines.append("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        two_lines.append("x-forwarded-for", HeaderValue::from_static("198.51.100.4"));
        assert_eq!(
            client_ip(&two_lines, &extensions, Some(&name)),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
    }
}
