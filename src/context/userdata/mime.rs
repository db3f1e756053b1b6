//! MIME headers: the header section of an entity, `Content-Type` with its boundary, and the
//! sniffing rule for whether a document is MIME at all.

pub(super) fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The header section of a MIME entity.
pub(super) struct Headers {
    /// `(lower-case name, unfolded value)` in order.
    pub(super) fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) body_start: usize,
}

/// The parts of a `Content-Type` value we use.
pub(super) struct ContentType {
    /// `type/subtype`, lower case; `text/plain` when absent.
    pub(super) mime: String,
    pub(super) boundary: Option<Vec<u8>>,
}

impl Headers {
    /// Reads header lines up to the blank line (the body starts after it) or up to the first
    /// line that is not a header (the body starts at it).
    pub(super) fn parse(bytes: &[u8]) -> Headers {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (line, next) = match bytes[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[pos..pos + i], pos + i + 1),
                None => (&bytes[pos..], bytes.len()),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Headers {
                    fields,
                    body_start: next,
                };
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match fields.last_mut() {
                    Some((_, value)) => value.extend_from_slice(line),
                    None => break,
                }
            } else {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    break;
                };
                let name = line[..colon].trim_ascii_end();
                if name.is_empty() || !name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
                    break;
                }
                fields.push((name.to_ascii_lowercase(), line[colon + 1..].to_vec()));
            }
            pos = next;
        }
        Headers {
            fields,
            body_start: pos,
        }
    }

    /// The first field called `name` (lower case), as Python's `Message.get` answers.
    pub(super) fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub(super) fn content_type(&self) -> ContentType {
        let Some(value) = self.get(b"content-type") else {
            return ContentType {
                mime: "text/plain".to_string(),
                boundary: None,
            };
        };
        let (mime, mut rest) = match value.iter().position(|&b| b == b';') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b""[..]),
        };
        let mime = String::from_utf8_lossy(mime.trim_ascii()).to_ascii_lowercase();
        let mut boundary = None;
        while !rest.is_empty() {
            let (name, value, after) = parameter(rest);
            if name.eq_ignore_ascii_case(b"boundary") && boundary.is_none() && !value.is_empty() {
                boundary = Some(value);
            }
            rest = after;
        }
        ContentType { mime, boundary }
    }
}

/// One `name=value` parameter at the start of `input`: name, value (unquoted) and what
/// follows the next `;`.
pub(super) fn parameter(input: &[u8]) -> (&[u8], Vec<u8>, &[u8]) {
    let end_of_name = input
        .iter()
        .position(|&b| b == b'=' || b == b';')
        .unwrap_or(input.len());
    let name = input[..end_of_name].trim_ascii();
    if input.get(end_of_name) != Some(&b'=') {
        return (
            name,
            Vec::new(),
            input.get(end_of_name + 1..).unwrap_or(b""),
        );
    }
    let rest = input[end_of_name + 1..].trim_ascii_start();
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let mut value = Vec::new();
        let mut i = 0;
        while i < quoted.len() {
            match quoted[i] {
                b'\\' if i + 1 < quoted.len() => {
                    value.push(quoted[i + 1]);
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let after = &quoted[i..];
        let next = after
            .iter()
            .position(|&b| b == b';')
            .map_or(&b""[..], |j| &after[j + 1..]);
        (name, value, next)
    } else {
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        (
            name,
            rest[..end].trim_ascii().to_vec(),
            rest.get(end + 1..).unwrap_or(b""),
        )
    }
}
