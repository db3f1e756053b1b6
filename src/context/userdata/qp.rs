//! quoted-printable bodies: decoded with a map from each decoded byte to the encoded bytes it
//! came from, so that a change rewrites only the encoded bytes of each placeholder.

use std::ops::Range;

use crate::protocol::hex_digit;

use super::{Decoder, Node, Place};

#[derive(Debug)]
pub(crate) struct QuotedPrintable {
    pub(super) data: Vec<u8>,
    /// For each decoded byte, the encoded bytes it came from.
    spans: Vec<Range<usize>>,
}

impl Decoder {
    pub(super) fn quoted_printable(&mut self, body: &[u8], place: &Place) -> Node {
        if self.too_deep(place) {
            return Node::Opaque;
        }
        let place = place.enter("quoted-printable");
        let (data, spans) = decode_quoted_printable(body);
        if !self.charge(&place, data.len()) {
            return Node::Opaque;
        }
        Node::QuotedPrintable(Box::new(QuotedPrintable { data, spans }))
    }
}

impl QuotedPrintable {
    /// Where the decoded bytes `range` are in the encoded body.
    pub(super) fn encoded_range(&self, range: &Range<usize>) -> Range<usize> {
        self.spans[range.start].start..self.spans[range.end - 1].end
    }
}

pub(super) fn decode_quoted_printable(bytes: &[u8]) -> (Vec<u8>, Vec<Range<usize>>) {
    let n = bytes.len();
    let mut data = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    let blank = |b: u8| b == b' ' || b == b'\t';
    // Where a run of blanks starting at `i` ends, and whether a line break or the end follows.
    let blanks_end = |i: usize| {
        let mut j = i;
        while j < n && blank(bytes[j]) {
            j += 1;
        }
        let at_eol = j == n || bytes[j] == b'\n' || bytes[j..].starts_with(b"\r\n");
        (j, at_eol)
    };
    let mut i = 0;
    while i < n {
        let b = bytes[i];
        if b == b'=' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&h| hex_digit(h)),
                bytes.get(i + 2).and_then(|&l| hex_digit(l)),
            ) {
                data.push((hi << 4) | lo);
                spans.push(i..i + 3);
                i += 3;
                continue;
            }
            let (j, at_eol) = blanks_end(i + 1);
            if at_eol {
                // Soft line break: the `=`, any blanks and the line break vanish.
                i = if bytes[j..].starts_with(b"\r\n") {
                    j + 2
                } else {
                    (j + 1).min(n)
                };
                continue;
            }
        } else if blank(b) {
            // Blanks at the end of a line were added in transport and go; others stay.
            let (j, at_eol) = blanks_end(i);
            if !at_eol {
                data.extend_from_slice(&bytes[i..j]);
                spans.extend((i..j).map(|k| k..k + 1));
            }
            i = j;
            continue;
        }
        data.push(b);
        spans.push(i..i + 1);
        i += 1;
    }
    (data, spans)
}

/// A value as quoted-printable text: printable ASCII except `=` stays, the rest is `=XX`.
pub(super) fn encode_quoted_printable_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if (b'!'..=b'~').contains(&b) && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("={b:02X}").as_bytes());
        }
    }
    out
}
