//! User-data formats: how the bytes of a context file become texts, and how changed texts go
//! back into exactly the same wrapping.
//!
//! The decoder builds a tree of [`Node`]s over the raw bytes. Leaves are texts to scan
//! ([`Node::Text`]) or bytes left alone ([`Node::Opaque`]); inner nodes undo one encoding. A
//! substitution walks the same tree and rebuilds only what changed: everything else (headers,
//! boundaries, preambles, untouched parts) is copied byte for byte.
//!
//! # What is recognised, following cloud-init's `convert_string`
//!
//! - **gzip** (magic `1f 8b`), also several members, also inside a part: decompressed, then
//!   read again as a document. A changed text is recompressed as one member with the original
//!   header's name, comment, extra field, time and OS byte (the compressed bytes differ).
//!   Bytes with the magic that do not decompress are left alone.
//! - **MIME** when `mime-version:` occurs (any case) in the first 4096 bytes, as in cloud-init,
//!   and the first line is a header; otherwise the file is plain text. Multipart bodies of any
//!   subtype, nested, are split on their boundary; the preamble, epilogue, headers and
//!   delimiters are structure, neither scanned nor changed. A missing close delimiter ends the
//!   last part at the end of the body; a part whose header section lacks the blank line ends
//!   its headers at the first line that is not one (Python's email parser does the same).
//! - Transfer encodings per part (or of a single-part message):
//!   - none, `7bit`, `8bit`, `binary`: the body is the text, changed in place.
//!   - `base64`: decoded (whitespace ignored, padding optional). A changed text is re-encoded
//!     with padding, the original line length (the longest line; a one-line body stays one
//!     line) and line ending, and the whitespace before and after the encoded lines kept.
//!   - `quoted-printable`: decoded (soft line breaks removed, trailing blanks dropped, `=XX`
//!     of either case). A change touches only the encoded bytes of each placeholder, which
//!     become the value with `=`, blanks and non-ASCII bytes written as `=XX`; the rest of the
//!     part is kept as it was, soft line breaks included. A line may grow past 76 characters:
//!     decoders, cloud-init's included, accept that, and rewrapping would change every line.
//!   - anything else: the part is left alone (and noted).
//!
//! Limits keep a hostile file from exhausting the machine: at most [`MAX_DEPTH`] nested
//! encodings and [`MAX_DECODED_LEN`] decoded bytes in total; beyond them a part is left alone
//! and noted.
//!
//! # Layout
//!
//! - `mime`: header sections, `Content-Type`, the MIME sniffing rule.
//! - `multipart`: splitting a multipart body into parts.
//! - `gzip`, `base64`, `qp`: one layer each: decoding, and re-encoding a changed text.
//! - `tree`: the walks over the decoded tree (texts, substitution, description).

mod base64;
mod gzip;
mod mime;
mod multipart;
mod qp;
#[cfg(test)]
mod tests;
mod tree;

use std::ops::Range;

use gzip::{Gzip, GZIP_MAGIC};
use mime::{contains_ignore_case, Headers};

pub(crate) use self::base64::Base64;
pub(crate) use qp::QuotedPrintable;
pub(crate) use tree::{describe, substitute, texts, TextRef};

/// Most decoded bytes (gzip, base64, quoted-printable) one file may produce.
pub const MAX_DECODED_LEN: usize = 64 << 20;
/// Most nested encodings (gzip, multipart, base64, quoted-printable) read in one file.
pub const MAX_DEPTH: usize = 8;
/// How far cloud-init looks for `mime-version:`.
const MIME_SNIFF_LEN: usize = 4096;

/// How one stretch of bytes is read.
#[derive(Debug)]
pub(crate) enum Node {
    /// Scanned and changed as is.
    Text,
    /// Neither scanned nor changed.
    Opaque,
    Gzip(Box<Gzip>),
    Base64(Box<Base64>),
    QuotedPrintable(Box<QuotedPrintable>),
    /// Sub-ranges read on their own; the bytes between them are structure.
    Pieces(Vec<Piece>),
}

#[derive(Debug)]
pub(crate) struct Piece {
    /// Where the piece is in the bytes its parent node reads.
    range: Range<usize>,
    /// `part 2.1` for a MIME part, for messages; `None` for a message's single body.
    label: Option<String>,
    node: Node,
}

/// Reads a whole file. Never fails: what cannot be read becomes [`Node::Opaque`] and a note.
pub(crate) fn decode(bytes: &[u8]) -> (Node, Vec<Note>) {
    let mut decoder = Decoder {
        budget: MAX_DECODED_LEN,
        notes: Vec::new(),
    };
    let node = decoder.document(bytes, &Place::default());
    (node, decoder.notes)
}

/// Where the decoder is, for notes and part numbers.
#[derive(Clone, Default)]
struct Place {
    /// `gzip, part 2`; empty at the top.
    description: String,
    /// `2.1`; empty outside multiparts.
    number: String,
    depth: usize,
}

impl Place {
    fn enter(&self, layer: &str) -> Place {
        Place {
            description: join(&self.description, layer),
            number: self.number.clone(),
            depth: self.depth + 1,
        }
    }

    fn part(&self, index: usize) -> Place {
        let number = if self.number.is_empty() {
            index.to_string()
        } else {
            format!("{}.{index}", self.number)
        };
        Place {
            description: join(&self.description, &format!("part {number}")),
            number,
            depth: self.depth,
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}, {b}")
    }
}

/// Something the decoder could not read, and where: `(layers, message)`, the layers as in
/// [`TextRef::within`].
pub(crate) type Note = (Option<String>, String);

struct Decoder {
    /// Decoded bytes still allowed.
    budget: usize,
    notes: Vec<Note>,
}

impl Decoder {
    fn note(&mut self, place: &Place, message: impl std::fmt::Display) {
        let within = (!place.description.is_empty()).then(|| place.description.clone());
        self.notes.push((within, message.to_string()));
    }

    /// Takes `len` decoded bytes from the budget, or notes why not.
    fn charge(&mut self, place: &Place, len: usize) -> bool {
        if len > self.budget {
            self.note(
                place,
                format_args!("more than {MAX_DECODED_LEN} decoded bytes; left as is"),
            );
            return false;
        }
        self.budget -= len;
        true
    }

    fn too_deep(&mut self, place: &Place) -> bool {
        if place.depth >= MAX_DEPTH {
            self.note(
                place,
                format_args!("more than {MAX_DEPTH} nested encodings; left as is"),
            );
            return true;
        }
        false
    }

    /// A whole file, or what a gzip layer decompressed to.
    fn document(&mut self, bytes: &[u8], place: &Place) -> Node {
        if bytes.starts_with(GZIP_MAGIC) {
            return self.gzip(bytes, place);
        }
        let sniff = &bytes[..bytes.len().min(MIME_SNIFF_LEN)];
        if !contains_ignore_case(sniff, b"mime-version:") {
            return Node::Text;
        }
        let headers = Headers::parse(bytes);
        if headers.fields.is_empty() {
            return Node::Text;
        }
        let body = headers.body_start..bytes.len();
        let node = self.body(&headers, &bytes[body.clone()], place);
        Node::Pieces(vec![Piece {
            range: body,
            label: None,
            node,
        }])
    }

    /// A body whose transfer encoding is undone (or was none).
    fn payload(&mut self, bytes: &[u8], place: &Place) -> Node {
        if bytes.starts_with(GZIP_MAGIC) {
            self.gzip(bytes, place)
        } else {
            Node::Text
        }
    }

    /// The body of a MIME entity, read according to its headers.
    fn body(&mut self, headers: &Headers, body: &[u8], place: &Place) -> Node {
        let content_type = headers.content_type();
        if content_type.mime.starts_with("multipart/") {
            match &content_type.boundary {
                Some(boundary) => return self.multipart(body, boundary, place),
                None => self.note(place, "multipart without a boundary; read as text"),
            }
        }
        let encoding = headers
            .get(b"content-transfer-encoding")
            .map(|v| String::from_utf8_lossy(v.trim_ascii()).to_ascii_lowercase());
        match encoding.as_deref() {
            None | Some("7bit" | "8bit" | "binary" | "") => self.payload(body, place),
            Some("base64") => self.base64(body, place),
            Some("quoted-printable") => self.quoted_printable(body, place),
            Some(other) => {
                self.note(
                    place,
                    format_args!("unknown Content-Transfer-Encoding {other:?}; left as is"),
                );
                Node::Opaque
            }
        }
    }
}
