//! The walks over a decoded tree: its texts in order (for scanning and messages), the bytes
//! with texts replaced (for substitution), and a short description (for `check`).

use std::io;
use std::ops::Range;

use super::qp::encode_quoted_printable_value;
use super::{join, Node, Piece};

/// One decoded text of the file and where it is, for messages.
pub(crate) struct TextRef<'a> {
    pub text: &'a [u8],
    /// The decoding layers around the text (`gzip, part 2, base64`); `None` when the text's
    /// lines are lines of the file itself.
    pub within: Option<String>,
    /// Lines of the enclosing decoded buffer before the text: line `n` of the text is line
    /// `line_offset + n` there.
    pub line_offset: usize,
}

/// Every text of the file in order.
pub(crate) fn texts<'a>(node: &'a Node, bytes: &'a [u8]) -> Vec<TextRef<'a>> {
    let mut out = Vec::new();
    collect(node, bytes, "", None, 0, &mut out);
    out
}

fn collect<'a>(
    node: &'a Node,
    bytes: &'a [u8],
    within: &str,
    part: Option<&str>,
    line_offset: usize,
    out: &mut Vec<TextRef<'a>>,
) {
    // A decoding layer starts a new line count, named by the part it is in.
    let layer = |name: &str| join(&join(within, part.unwrap_or("")), name);
    match node {
        Node::Text => out.push(TextRef {
            text: bytes,
            within: (!within.is_empty()).then(|| within.to_string()),
            line_offset,
        }),
        Node::Opaque => {}
        Node::Gzip(gzip) => collect(&gzip.inner, &gzip.data, &layer("gzip"), None, 0, out),
        Node::Base64(b64) => collect(&b64.inner, &b64.data, &layer("base64"), None, 0, out),
        Node::QuotedPrintable(qp) => out.push(TextRef {
            text: &qp.data,
            within: Some(layer("quoted-printable")),
            line_offset: 0,
        }),
        Node::Pieces(pieces) => {
            // Pieces are in order: count the lines before each one incrementally.
            let (mut counted, mut lines) = (0, line_offset);
            for piece in pieces {
                let start = piece.range.start.max(counted);
                lines += bytes[counted..start]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                counted = start;
                collect(
                    &piece.node,
                    &bytes[piece.range.clone()],
                    within,
                    piece.label.as_deref().or(part),
                    lines,
                    out,
                );
            }
        }
    }
}

/// Replacements for one text: sorted, non-overlapping ranges of the text and their new bytes.
pub(crate) type Replacements = Vec<(Range<usize>, Vec<u8>)>;

/// The bytes `node` reads from `bytes`, with every text replaced as `replace` says; `None` when
/// nothing changes. Errors only come from the gzip encoder.
pub(crate) fn substitute(
    node: &Node,
    bytes: &[u8],
    replace: &mut dyn FnMut(&[u8]) -> Replacements,
) -> io::Result<Option<Vec<u8>>> {
    Ok(match node {
        Node::Text => {
            let replacements = replace(bytes);
            (!replacements.is_empty()).then(|| splice(bytes, &replacements))
        }
        Node::Opaque => None,
        Node::Gzip(gzip) => match substitute(&gzip.inner, &gzip.data, replace)? {
            Some(data) => Some(gzip.compress(&data)?),
            None => None,
        },
        Node::Base64(b64) => {
            substitute(&b64.inner, &b64.data, replace)?.map(|data| b64.encode(&data))
        }
        Node::QuotedPrintable(qp) => {
            let replacements: Replacements = replace(&qp.data)
                .into_iter()
                .filter(|(range, _)| !range.is_empty())
                .map(|(range, value)| {
                    (
                        qp.encoded_range(&range),
                        encode_quoted_printable_value(&value),
                    )
                })
                .collect();
            (!replacements.is_empty()).then(|| splice(bytes, &replacements))
        }
        Node::Pieces(pieces) => {
            let mut out: Option<Vec<u8>> = None;
            let mut copied = 0;
            for piece in pieces {
                if let Some(new) = substitute(&piece.node, &bytes[piece.range.clone()], replace)? {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                    out.extend_from_slice(&bytes[copied..piece.range.start]);
                    out.extend_from_slice(&new);
                    copied = piece.range.end;
                }
            }
            out.map(|mut out| {
                out.extend_from_slice(&bytes[copied..]);
                out
            })
        }
    })
}

fn splice(bytes: &[u8], replacements: &[(Range<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut copied = 0;
    for (range, new) in replacements {
        out.extend_from_slice(&bytes[copied..range.start]);
        out.extend_from_slice(new);
        copied = range.end;
    }
    out.extend_from_slice(&bytes[copied..]);
    out
}

/// A short description of the structure, e.g. `MIME multipart(1: text, 2: base64(text))`.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Text => "text".to_string(),
        Node::Opaque => "left as is".to_string(),
        Node::Gzip(gzip) => format!("gzip({})", describe(&gzip.inner)),
        Node::Base64(b64) => format!("base64({})", describe(&b64.inner)),
        Node::QuotedPrintable(_) => "quoted-printable(text)".to_string(),
        Node::Pieces(pieces) => match pieces.as_slice() {
            [Piece {
                label: None, node, ..
            }] => match node {
                Node::Pieces(_) => format!("MIME {}", describe(node)),
                _ => format!("MIME({})", describe(node)),
            },
            _ => {
                let parts: Vec<String> = pieces
                    .iter()
                    .map(|p| {
                        let number = p.label.as_deref().unwrap_or("");
                        let number = number.rsplit(['.', ' ']).next().unwrap_or(number);
                        format!("{number}: {}", describe(&p.node))
                    })
                    .collect();
                format!("multipart({})", parts.join(", "))
            }
        },
    }
}
