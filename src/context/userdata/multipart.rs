//! Multipart bodies: split on their boundary into parts, each read on its own; the preamble,
//! epilogue and delimiters are structure.

use std::ops::Range;

use super::mime::Headers;
use super::{Decoder, Node, Piece, Place};

impl Decoder {
    pub(super) fn multipart(&mut self, body: &[u8], boundary: &[u8], place: &Place) -> Node {
        if self.too_deep(place) {
            return Node::Opaque;
        }
        let (ranges, closed) = split_multipart(body, boundary);
        if ranges.is_empty() {
            self.note(place, "multipart without any part");
        } else if !closed {
            self.note(place, "multipart without its closing boundary");
        }
        let pieces = ranges
            .into_iter()
            .enumerate()
            .map(|(index, range)| {
                let part_place = Place {
                    depth: place.depth + 1,
                    ..place.clone()
                }
                .part(index + 1);
                let part = &body[range.clone()];
                let headers = Headers::parse(part);
                let node = self.body(&headers, &part[headers.body_start..], &part_place);
                Piece {
                    range: range.start + headers.body_start..range.end,
                    label: Some(format!("part {}", part_place.number)),
                    node,
                }
            })
            .collect();
        Node::Pieces(pieces)
    }
}

/// The ranges of the parts of a multipart body (headers included), and whether the closing
/// delimiter was seen. A part ends before the line break that precedes the next delimiter.
fn split_multipart(body: &[u8], boundary: &[u8]) -> (Vec<Range<usize>>, bool) {
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let next = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        if let Some(close) = delimiter(&body[pos..next], boundary) {
            if let Some(start) = open.take() {
                parts.push(start..part_end(body, start, pos));
            }
            if close {
                return (parts, true);
            }
            open = Some(next);
        }
        pos = next;
    }
    if let Some(start) = open {
        parts.push(start..body.len());
    }
    (parts, false)
}

/// Whether `line` is a delimiter of `boundary`: `Some(true)` for the closing one.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    rest.iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// Where a part that starts at `start` ends when the next delimiter line starts at `delimiter`:
/// the line break before the delimiter belongs to the delimiter.
fn part_end(body: &[u8], start: usize, delimiter: usize) -> usize {
    let mut end = delimiter;
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}
