//! Content negotiation of the single-key route, as the legacy Django REST Framework view did
//! it (PROTOCOL.md part 4, "Legacy fidelity"): the view offered `text/plain` first and JSON
//! second, and `?format=txt|json` overrode the `Accept` header.
//!
//! Two algorithms, one per mode:
//! - ours ([`negotiate`] with `legacy: false`): RFC 9110 q-values. Each rendering takes the
//!   q of the most specific range that matches it; the highest q wins; a tie goes to the
//!   rendering matched by the more specific range, then to text (DRF's order). Nothing
//!   acceptable still answers text: a client that asks for HTML gets the legacy default
//!   rather than an error.
//! - legacy (`legacy: true`): DRF's `DefaultContentNegotiation`, which ignores q-values: the
//!   ranges are grouped by precedence (type/subtype with parameters other than q, then
//!   type/subtype, then type/*, then */*), and within the first group that matches anything
//!   the renderer order decides. Nothing acceptable is 406, an unknown `?format=` 404.
//!
//! Both give the same answer for every `Accept` a legacy client or agent sends; they differ
//! where q-values contradict DRF's grouping (`application/json, text/plain;q=0.5` is JSON
//! for us, text for DRF), on `;q=0`, which DRF ignores, and where `?format=` names a
//! rendering that `Accept` rules out (ours: the format wins; DRF: 406).

use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// How one item is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendering {
    /// `master_ip: 10.10.25.5`, the legacy default.
    Text,
    /// `{"key": ..., "value": ...}`.
    Json,
}

/// A rendering with its media type and its names for `?format=`.
type Offer = (
    Rendering,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// The renderings in the legacy view's order, with their media type and `?format=` name.
/// `text` is our alias of the legacy `txt`.
const OFFERED: [Offer; 2] = [
    (Rendering::Text, "text", "plain", &["txt", "text"]),
    (Rendering::Json, "application", "json", &["json"]),
];

/// The renderings of the member list: JSON first, so that a client that prefers neither
/// (no `Accept`, or `*/*`) gets JSON; `text/plain` gets one line per member.
const LIST_OFFERED: [Offer; 2] = [OFFERED[1], OFFERED[0]];

/// The rendering of the member list (ours: RFC 9110 q-values, as [`negotiate`] without
/// `legacy`).
pub(crate) fn negotiate_list(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Rendering, ApiError> {
    negotiate_among(&LIST_OFFERED, headers, query, false)
}

/// The rendering of the single-key route for a request with these headers and query string.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    query: Option<&str>,
    legacy: bool,
) -> Result<Rendering, ApiError> {
    negotiate_among(&OFFERED, headers, query, legacy)
}

/// Whether the legacy service would have answered a route that renders JSON only (every
/// route but the single-key one): 406 when `Accept` rules JSON out, 404 for a `?format=`
/// other than `json`.
pub(crate) fn accepts_json(headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    negotiate_among(&OFFERED[1..], headers, query, true).map(drop)
}

/// Without allocating (the single-key GET is the hot path): the offers named by
/// `?format=`, and the ranges of `Accept`, are iterated where they lie.
fn negotiate_among(
    offers: &[Offer],
    headers: &HeaderMap,
    query: Option<&str>,
    legacy: bool,
) -> Result<Rendering, ApiError> {
    let format = format_param(query);
    let named = |offer: &&Offer| {
        let names = offer.3;
        // The legacy service knew `txt` only.
        let names = if legacy { &names[..1] } else { names };
        format.map_or(true, |format| names.contains(&format))
    };
    let Some(first) = offers.iter().find(named) else {
        return Err(if legacy {
            ApiError::KeyNotFound
        } else {
            ApiError::NotAcceptable(format!(
                "unknown format {:?}: use ?format=txt or ?format=json",
                format.unwrap_or_default()
            ))
        });
    };
    let offered = || offers.iter().filter(named);
    let chosen = if legacy {
        drf_choice(headers, offered)
    } else {
        rfc_choice(headers, offered).or(Some(first.0))
    };
    chosen.ok_or_else(|| {
        let offered: Vec<String> = offers
            .iter()
            .map(|(_, main, sub, _)| format!("{main}/{sub}"))
            .collect();
        ApiError::NotAcceptable(format!("offered: {}", offered.join(", ")))
    })
}

/// The ranges of every `Accept` header, as one list (as WSGI servers hand them to Django);
/// without the header, `*/*`.
fn ranges(headers: &HeaderMap) -> impl Iterator<Item = MediaRange<'_>> {
    let absent = !headers.contains_key(header::ACCEPT);
    std::iter::once(MediaRange::ANY)
        .filter(move |_| absent)
        .chain(
            headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(MediaRange::parse),
        )
}

/// The value of `format=` in the query, if any; the last one when repeated, as DRF reads it
/// (Django's `QueryDict.get` answers the last value).
fn format_param(query: Option<&str>) -> Option<&str> {
    query?
        .rsplit('&')
        .find_map(|pair| pair.strip_prefix("format="))
}

/// One range of an `Accept` header.
#[derive(Debug, Clone, Copy)]
struct MediaRange<'a> {
    main: &'a str,
    sub: &'a str,
    /// Parameters other than q (e.g. `charset`): DRF ranks such a range above a bare one.
    has_params: bool,
    /// `None` when the range's q is not a number from 0 to 1: RFC 9110 then ignores it.
    q: Option<f32>,
}

impl<'a> MediaRange<'a> {
    const ANY: MediaRange<'static> = MediaRange {
        main: "*",
        sub: "*",
        has_params: false,
        q: Some(1.0),
    };

    fn parse(text: &'a str) -> Self {
        let mut parts = text.split(';');
        let essence = parts.next().unwrap_or_default();
        let (main, sub) = essence.split_once('/').unwrap_or((essence, ""));
        let mut has_params = false;
        let mut q = Some(1.0);
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("q") {
                q = value
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q));
            } else {
                has_params = true;
            }
        }
        MediaRange {
            main: main.trim(),
            sub: sub.trim(),
            has_params,
            q,
        }
    }

    /// DRF's `_MediaType.precedence`: 3 for type/subtype;params, 2 type/subtype, 1 type/*,
    /// 0 */*.
    fn precedence(&self) -> u8 {
        if self.main == "*" {
            0
        } else if self.sub == "*" {
            1
        } else if self.has_params {
            3
        } else {
            2
        }
    }

    fn matches(&self, main: &str, sub: &str) -> bool {
        (self.main == "*" || self.main.eq_ignore_ascii_case(main))
            && (self.sub == "*" || self.sub.eq_ignore_ascii_case(sub))
    }
}

/// DRF: the first precedence group with a match decides, by renderer order; q is ignored.
fn drf_choice<'o, I>(headers: &HeaderMap, offered: impl Fn() -> I) -> Option<Rendering>
where
    I: Iterator<Item = &'o Offer>,
{
    (0..=3).rev().find_map(|precedence| {
        offered().find_map(|(rendering, main, sub, _)| {
            ranges(headers)
                .any(|r| r.precedence() == precedence && r.matches(main, sub))
                .then_some(*rendering)
        })
    })
}

/// RFC 9110: each offer's q is that of its most specific matching range; the highest q > 0
/// wins, ties go to the offer matched more specifically, then to the earlier offer.
fn rfc_choice<'o, I>(headers: &HeaderMap, offered: impl Fn() -> I) -> Option<Rendering>
where
    I: Iterator<Item = &'o Offer>,
{
    let mut best: Option<(f32, u8, Rendering)> = None;
    for (rendering, main, sub, _) in offered() {
        let Some(range) = ranges(headers)
            .filter(|r| r.q.is_some() && r.matches(main, sub))
            .max_by_key(|r| r.precedence())
        else {
            continue;
        };
        let (q, precedence) = (range.q.unwrap_or_default(), range.precedence());
        if q <= 0.0 {
            continue;
        }
        if best.map_or(true, |(bq, bp, _)| q > bq || (q == bq && precedence > bp)) {
            best = Some((q, precedence, *rendering));
        }
    }
    best.map(|(_, _, rendering)| rendering)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn answer(accept: Option<&str>, query: Option<&str>, legacy: bool) -> Option<Rendering> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        }
        negotiate(&headers, query, legacy).ok()
    }

    use Rendering::{Json, Text};

    #[test]
    fn the_member_list_prefers_json_unless_text_is_preferred() {
        let list = |accept: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(accept) = accept {
                headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            }
            negotiate_list(&headers, None).unwrap()
        };
        assert_eq!(list(None), Json);
        assert_eq!(list(Some("*/*")), Json);
        assert_eq!(list(Some("application/json")), Json);
        assert_eq!(list(Some("text/plain")), Text);
        assert_eq!(list(Some("text/*, application/json;q=0.5")), Text);
    }

    #[test]
    fn both_modes_agree_where_legacy_clients_look() {
        for (accept, query, expected) in [
            (None, None, Text),
            (Some("*/*"), None, Text),
            (Some("text/plain"), None, Text),
            (Some("application/json"), None, Json),
            (Some("Application/JSON; charset=utf-8"), None, Json),
            (Some("text/plain, application/json"), None, Text),
            (Some("application/json;q=0.1, text/plain"), None, Text),
            (Some("text/plain;q=1, application/json;q=0.001"), None, Text),
            (Some("application/*"), None, Json),
            (Some("application/json, */*"), None, Json),
            (Some("text/html, application/json;q=0.9"), None, Json),
            (
                Some("application/json, text/javascript, */*; q=0.01"),
                None,
                Json,
            ),
            (None, Some("format=json"), Json),
            (Some("*/*"), Some("format=txt"), Text),
        ] {
            for legacy in [false, true] {
                assert_eq!(
                    answer(accept, query, legacy),
                    Some(expected),
                    "{accept:?} {query:?} legacy={legacy}"
                );
            }
        }
    }

    #[test]
    fn where_the_modes_differ() {
        // (accept, query, ours, legacy)
        for (accept, query, ours, legacy) in [
            (Some("text/html"), None, Some(Text), None),
            (Some("application/xml"), None, Some(Text), None),
            (Some(""), None, Some(Text), None),
            (
                Some("application/json, text/plain;q=0.5"),
                None,
                Some(Json),
                Some(Text),
            ),
            (Some("application/json;q=0"), None, Some(Text), Some(Json)),
            (None, Some("format=text"), Some(Text), None),
            // DRF keeps the renderers `?format=` names, then negotiates Accept among them.
            (Some("text/plain"), Some("format=json"), Some(Json), None),
            (
                Some("application/json"),
                Some("format=txt"),
                Some(Text),
                None,
            ),
            (None, Some("format=xml"), None, None),
        ] {
            assert_eq!(answer(accept, query, false), ours, "{accept:?} {query:?}");
            assert_eq!(answer(accept, query, true), legacy, "{accept:?} {query:?}");
        }
    }

    #[test]
    fn unknown_formats_are_404_in_legacy_mode() {
        let err = negotiate(&HeaderMap::new(), Some("format=xml"), true).unwrap_err();
        assert!(matches!(err, ApiError::KeyNotFound), "{err}");
        let err = negotiate(&HeaderMap::new(), Some("format=xml"), false).unwrap_err();
        assert!(matches!(err, ApiError::NotAcceptable(_)), "{err}");
    }
}
