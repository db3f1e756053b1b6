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

use std::io::{self, Read, Write};
use std::ops::Range;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

/// Most decoded bytes (gzip, base64, quoted-printable) one file may produce.
pub const MAX_DECODED_LEN: usize = 64 << 20;
/// Most nested encodings (gzip, multipart, base64, quoted-printable) read in one file.
pub const MAX_DEPTH: usize = 8;
/// How far cloud-init looks for `mime-version:`.
const MIME_SNIFF_LEN: usize = 4096;
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

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

#[derive(Debug)]
pub(crate) struct Gzip {
    header: GzipHeader,
    data: Vec<u8>,
    inner: Node,
}

/// The fields of the original gzip header worth carrying into a recompressed file.
#[derive(Debug)]
struct GzipHeader {
    mtime: u32,
    operating_system: u8,
    filename: Option<Vec<u8>>,
    comment: Option<Vec<u8>>,
    extra: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Base64 {
    data: Vec<u8>,
    layout: Base64Layout,
    inner: Node,
}

/// How a base64 body was laid out, to lay the re-encoded one out the same way.
#[derive(Debug)]
struct Base64Layout {
    leading: Vec<u8>,
    trailing: Vec<u8>,
    /// `None`: a single line.
    line_len: Option<usize>,
    eol: &'static [u8],
}

#[derive(Debug)]
pub(crate) struct QuotedPrintable {
    data: Vec<u8>,
    /// For each decoded byte, the encoded bytes it came from.
    spans: Vec<Range<usize>>,
}

/// Lenient decoding as email parsers do it: padding optional, stray low bits accepted.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

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

    fn gzip(&mut self, bytes: &[u8], place: &Place) -> Node {
        if self.too_deep(place) {
            return Node::Opaque;
        }
        let place = place.enter("gzip");
        let mut decoder = MultiGzDecoder::new(bytes);
        let mut data = Vec::new();
        let limit = u64::try_from(self.budget)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if let Err(e) = (&mut decoder).take(limit).read_to_end(&mut data) {
            self.note(&place, format_args!("not valid gzip ({e}); left as is"));
            return Node::Opaque;
        }
        if !self.charge(&place, data.len()) {
            return Node::Opaque;
        }
        let header = match decoder.header() {
            Some(h) => GzipHeader {
                mtime: h.mtime(),
                operating_system: h.operating_system(),
                filename: h.filename().map(<[u8]>::to_vec),
                comment: h.comment().map(<[u8]>::to_vec),
                extra: h.extra().map(<[u8]>::to_vec),
            },
            None => GzipHeader {
                mtime: 0,
                operating_system: 255,
                filename: None,
                comment: None,
                extra: None,
            },
        };
        let inner = self.document(&data, &place);
        Node::Gzip(Box::new(Gzip {
            header,
            data,
            inner,
        }))
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

    fn multipart(&mut self, body: &[u8], boundary: &[u8], place: &Place) -> Node {
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

    fn base64(&mut self, body: &[u8], place: &Place) -> Node {
        if self.too_deep(place) {
            return Node::Opaque;
        }
        let place = place.enter("base64");
        let core_start = body.len() - body.trim_ascii_start().len();
        let core_end = core_start + body[core_start..].trim_ascii_end().len();
        let core = &body[core_start..core_end];
        let compact: Vec<u8> = core
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let data = match LENIENT_BASE64.decode(&compact) {
            Ok(data) => data,
            Err(e) => {
                self.note(&place, format_args!("not valid base64 ({e}); left as is"));
                return Node::Opaque;
            }
        };
        if !self.charge(&place, data.len()) {
            return Node::Opaque;
        }
        let line_len = if core.contains(&b'\n') {
            core.split(|&b| b == b'\n')
                .map(|line| line.trim_ascii_end().len())
                .max()
                .filter(|&len| len > 0)
        } else {
            None
        };
        let eol: &'static [u8] = if core.windows(2).any(|w| w == b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let layout = Base64Layout {
            leading: body[..core_start].to_vec(),
            trailing: body[core_end..].to_vec(),
            line_len,
            eol,
        };
        let inner = self.payload(&data, &place);
        Node::Base64(Box::new(Base64 {
            data,
            layout,
            inner,
        }))
    }

    fn quoted_printable(&mut self, body: &[u8], place: &Place) -> Node {
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
            Some(data) => Some(gzip.header.compress(&data)?),
            None => None,
        },
        Node::Base64(b64) => {
            substitute(&b64.inner, &b64.data, replace)?.map(|data| b64.layout.encode(&data))
        }
        Node::QuotedPrintable(qp) => {
            let replacements: Replacements = replace(&qp.data)
                .into_iter()
                .filter(|(range, _)| !range.is_empty())
                .map(|(range, value)| {
                    let encoded = qp.spans[range.start].start..qp.spans[range.end - 1].end;
                    (encoded, encode_quoted_printable_value(&value))
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

impl GzipHeader {
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut builder = GzBuilder::new()
            .mtime(self.mtime)
            .operating_system(self.operating_system);
        // Parsed header strings end at a NUL and never hold one; the builder panics on one.
        if let Some(name) = self.filename.clone().filter(|n| !n.contains(&0)) {
            builder = builder.filename(name);
        }
        if let Some(comment) = self.comment.clone().filter(|c| !c.contains(&0)) {
            builder = builder.comment(comment);
        }
        if let Some(extra) = self
            .extra
            .clone()
            .filter(|e| e.len() <= usize::from(u16::MAX))
        {
            builder = builder.extra(extra);
        }
        let mut encoder = builder.write(Vec::new(), Compression::default());
        encoder.write_all(data)?;
        encoder.finish()
    }
}

impl Base64Layout {
    fn encode(&self, data: &[u8]) -> Vec<u8> {
        let encoded = STANDARD.encode(data);
        let mut out = self.leading.clone();
        match self.line_len {
            Some(len) => {
                for (index, line) in encoded.as_bytes().chunks(len).enumerate() {
                    if index > 0 {
                        out.extend_from_slice(self.eol);
                    }
                    out.extend_from_slice(line);
                }
            }
            None => out.extend_from_slice(encoded.as_bytes()),
        }
        out.extend_from_slice(&self.trailing);
        out
    }
}

fn decode_quoted_printable(bytes: &[u8]) -> (Vec<u8>, Vec<Range<usize>>) {
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
                bytes.get(i + 1).and_then(|&h| hex(h)),
                bytes.get(i + 2).and_then(|&l| hex(l)),
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

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A value as quoted-printable text: printable ASCII except `=` stays, the rest is `=XX`.
fn encode_quoted_printable_value(value: &[u8]) -> Vec<u8> {
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

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The header section of a MIME entity.
struct Headers {
    /// `(lower-case name, unfolded value)` in order.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    body_start: usize,
}

/// The parts of a `Content-Type` value we use.
struct ContentType {
    /// `type/subtype`, lower case; `text/plain` when absent.
    mime: String,
    boundary: Option<Vec<u8>>,
}

impl Headers {
    /// Reads header lines up to the blank line (the body starts after it) or up to the first
    /// line that is not a header (the body starts at it).
    fn parse(bytes: &[u8]) -> Headers {
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
    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn content_type(&self) -> ContentType {
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
fn parameter(input: &[u8]) -> (&[u8], Vec<u8>, &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzBuilder::new()
            .filename("user-data")
            .mtime(1_700_000_000)
            .write(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_noted(bytes: &[u8]) -> (Node, Vec<String>) {
        let (node, notes) = decode(bytes);
        let notes = notes
            .into_iter()
            .map(|(within, message)| match within {
                Some(within) => format!("{within}: {message}"),
                None => message,
            })
            .collect();
        (node, notes)
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    fn all_texts(bytes: &[u8]) -> Vec<(Vec<u8>, Option<String>, usize)> {
        let (node, _) = decode(bytes);
        texts(&node, bytes)
            .into_iter()
            .map(|t| (t.text.to_vec(), t.within, t.line_offset))
            .collect()
    }

    /// Replaces every `@@` with `IP`.
    fn at_signs(text: &[u8]) -> Replacements {
        text.windows(2)
            .enumerate()
            .filter(|(_, w)| *w == b"@@")
            .map(|(i, _)| (i..i + 2, b"IP".to_vec()))
            .fold(Vec::new(), |mut acc: Replacements, (r, v)| {
                let free = match acc.last() {
                    Some((last, _)) => last.end <= r.start,
                    None => true,
                };
                if free {
                    acc.push((r, v));
                }
                acc
            })
    }

    fn subst(bytes: &[u8]) -> Option<Vec<u8>> {
        let (node, _) = decode(bytes);
        substitute(&node, bytes, &mut at_signs).unwrap()
    }

    /// Substitution changes every `@@` of a UTF-8 `message` and nothing else.
    fn assert_only_markers_replaced(message: &[u8]) {
        let out = subst(message).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(message.to_vec())
                .unwrap()
                .replace("@@", "IP")
        );
    }

    #[test]
    fn plain_text() {
        let (node, notes) = decode_noted(b"a\nb\n");
        assert_eq!(describe(&node), "text");
        assert!(notes.is_empty());
        assert_eq!(subst(b"x=@@\n\xFF\n").unwrap(), b"x=IP\n\xFF\n");
        assert_eq!(subst(b"nothing"), None);
    }

    #[test]
    fn mime_needs_the_version_header_near_the_start() {
        let mut late = vec![b'x'; MIME_SNIFF_LEN];
        late.extend_from_slice(b"\nMIME-Version: 1.0\n");
        assert_eq!(describe(&decode(&late).0), "text");
        let (node, _) = decode(b"#!/bin/sh\necho MIME-Version: 1.0\n");
        assert_eq!(describe(&node), "text");
    }

    const MULTIPART: &[u8] = b"Content-Type: multipart/mixed; boundary=\"===b==\"\n\
MIME-Version: 1.0\n\
\n\
preamble @@\n\
--===b==\n\
Content-Type: text/ucernvm; charset=\"us-ascii\"\n\
MIME-Version: 1.0\n\
Content-Transfer-Encoding: 7bit\n\
\n\
[ucernvm-begin]\n\
cvm_cluster_pin=abc\n\
[ucernvm-end]\n\
\n\
--===b==\n\
Content-Type: text/cloud-config\n\
Content-Transfer-Encoding: base64\n\
\n\
cnVuY21kOgogIC0gZWNobyBAQCA+IC9ldGMvbWFzdGVyCg==\n\
\n\
--===b==--\n\
epilogue @@\n";

    #[test]
    fn multipart_with_base64_part() {
        let (node, notes) = decode_noted(MULTIPART);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(describe(&node), "MIME multipart(1: text, 2: base64(text))");
        let texts = all_texts(MULTIPART);
        assert_eq!(texts.len(), 2);
        assert_eq!(
            texts[0],
            (
                b"[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n".to_vec(),
                None,
                9
            )
        );
        assert_eq!(
            texts[1],
            (
                b"runcmd:\n  - echo @@ > /etc/master\n".to_vec(),
                Some("part 2, base64".to_string()),
                0
            )
        );
        let out = subst(MULTIPART).unwrap();
        let expected = String::from_utf8(MULTIPART.to_vec()).unwrap().replace(
            "cnVuY21kOgogIC0gZWNobyBAQCA+IC9ldGMvbWFzdGVyCg==",
            &STANDARD.encode("runcmd:\n  - echo IP > /etc/master\n"),
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn base64_keeps_line_length_line_ending_and_surrounding_blanks() {
        let text =
            "line one with @@ in it, long enough to need several lines of base64\n".repeat(3);
        let encoded = STANDARD.encode(&text);
        let wrapped: Vec<&str> = encoded
            .as_bytes()
            .chunks(60)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let message = format!(
            "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n{}\r\n\r\n",
            wrapped.join("\r\n")
        );
        let out = String::from_utf8(subst(message.as_bytes()).unwrap()).unwrap();
        let new = STANDARD.encode(text.replace("@@", "IP"));
        let rewrapped: Vec<&str> = new
            .as_bytes()
            .chunks(60)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(
            out,
            format!(
                "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n{}\r\n\r\n",
                rewrapped.join("\r\n")
            )
        );
    }

    #[test]
    fn base64_on_one_line_stays_on_one_line() {
        let body =
            STANDARD.encode("x=@@ and a long text after it, long enough for 76 columns and more");
        let message = format!("MIME-Version: 1.0\nContent-Transfer-Encoding: BASE64\n\n{body}");
        let out = String::from_utf8(subst(message.as_bytes()).unwrap()).unwrap();
        let (_, new_body) = out.split_once("\n\n").unwrap();
        assert!(!new_body.contains('\n'));
        assert_eq!(
            STANDARD.decode(new_body).unwrap(),
            b"x=IP and a long text after it, long enough for 76 columns and more"
        );
    }

    #[test]
    fn invalid_base64_is_left_alone_and_noted() {
        let message = b"MIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\n@@ not base64 @@\n";
        let (node, notes) = decode_noted(message);
        assert_eq!(describe(&node), "MIME(left as is)");
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("base64: not valid base64"),
            "{notes:?}"
        );
        assert_eq!(subst(message), None);
    }

    #[test]
    fn quoted_printable_changes_only_the_placeholder_bytes() {
        let message = b"MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n\
caf=C3=A9 @@ =\nsoft @=\n@ tail  \nend=3D@@";
        let texts = all_texts(message);
        assert_eq!(texts[0].0, "café @@ soft @@ tail\nend=@@".as_bytes());
        assert_eq!(texts[0].1.as_deref(), Some("quoted-printable"),);
        let out = subst(message).unwrap();
        assert_eq!(
            out,
            b"MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n\
caf=C3=A9 IP =\nsoft IP tail  \nend=3DIP"
        );
    }

    #[test]
    fn quoted_printable_values_are_encoded() {
        assert_eq!(
            encode_quoted_printable_value("a=b c\u{e9}".as_bytes()),
            b"a=3Db=20c=C3=A9"
        );
        let (data, spans) = decode_quoted_printable(b"a=3Db=20c=C3=A9");
        assert_eq!(data, "a=b c\u{e9}".as_bytes());
        assert_eq!(spans.len(), data.len());
    }

    #[test]
    fn quoted_printable_decoding_is_lenient() {
        let (data, _) = decode_quoted_printable(b"a=\r\nb=3d=ZZ = x\t\r\n=");
        assert_eq!(data, b"ab==ZZ = x\r\n");
    }

    #[test]
    fn gzip_of_plain_and_of_mime() {
        let plain = gzip(b"ip=@@\n");
        let (node, _) = decode(&plain);
        assert_eq!(describe(&node), "gzip(text)");
        let out = subst(&plain).unwrap();
        assert_eq!(gunzip(&out), b"ip=IP\n");
        let mut d = MultiGzDecoder::new(&out[..]);
        d.read_to_end(&mut Vec::new()).unwrap();
        let header = d.header().unwrap();
        assert_eq!(header.filename(), Some(&b"user-data"[..]));
        assert_eq!(header.mtime(), 1_700_000_000);

        let mime = gzip(MULTIPART);
        assert_eq!(
            describe(&decode(&mime).0),
            "gzip(MIME multipart(1: text, 2: base64(text)))"
        );
        assert_eq!(gunzip(&subst(&mime).unwrap()), subst(MULTIPART).unwrap());
        assert_eq!(all_texts(&mime)[0].1.as_deref(), Some("gzip"));
    }

    #[test]
    fn gzip_members_are_concatenated() {
        let mut two = gzip(b"a=@@\n");
        two.extend_from_slice(&gzip(b"b=@@\n"));
        assert_eq!(all_texts(&two)[0].0, b"a=@@\nb=@@\n");
        assert_eq!(gunzip(&subst(&two).unwrap()), b"a=IP\nb=IP\n");
    }

    #[test]
    fn broken_gzip_is_left_alone() {
        let mut broken = gzip(b"a=@@\n");
        broken.truncate(broken.len() - 6);
        let (node, notes) = decode_noted(&broken);
        assert_eq!(describe(&node), "left as is");
        assert!(notes[0].starts_with("gzip: not valid gzip"), "{notes:?}");
        assert_eq!(subst(&broken), None);
    }

    #[test]
    fn gzip_inside_a_base64_part() {
        let part = STANDARD.encode(gzip(b"#!/bin/sh\necho @@\n"));
        let message = format!(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\n\
Content-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{part}\n--XX--\n"
        );
        assert_eq!(
            describe(&decode(message.as_bytes()).0),
            "MIME multipart(1: base64(gzip(text)))"
        );
        let texts = all_texts(message.as_bytes());
        assert_eq!(texts[0].1.as_deref(), Some("part 1, base64, gzip"));
        let out = String::from_utf8(subst(message.as_bytes()).unwrap()).unwrap();
        let new_part = out
            .split("\n\n")
            .nth(2)
            .unwrap()
            .split('\n')
            .next()
            .unwrap();
        assert_eq!(
            gunzip(&STANDARD.decode(new_part).unwrap()),
            b"#!/bin/sh\necho IP\n"
        );
        assert!(out.ends_with("\n--XX--\n"));
    }

    #[test]
    fn nested_multipart_and_part_numbers() {
        let message = b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n\
--outer\n\nfirst @@\n--outer\nContent-Type: multipart/alternative; boundary=\"inner\"\n\n\
--inner\nContent-Transfer-Encoding: quoted-printable\n\nin=3D@@\n--inner\n\nsecond @@\n--inner--\n\
--outer--\n";
        assert_eq!(
            describe(&decode(message).0),
            "MIME multipart(1: text, 2: multipart(1: quoted-printable(text), 2: text))"
        );
        let texts = all_texts(message);
        assert_eq!(texts[0].0, b"first @@");
        assert_eq!(texts[0].2, 5);
        assert_eq!(texts[1].1.as_deref(), Some("part 2.1, quoted-printable"));
        assert_eq!(texts[2].0, b"second @@");
        assert_eq!(texts[2].2, 15);
        assert_only_markers_replaced(message);
    }

    #[test]
    fn crlf_multipart_and_parts_without_headers() {
        let message = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\n\r\n@@\r\n--b \r\nno blank line @@\r\n--b--\r\n";
        let texts = all_texts(message);
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0].0, b"@@");
        assert_eq!(texts[1].0, b"no blank line @@");
        assert_only_markers_replaced(message);
    }

    #[test]
    fn missing_close_delimiter_and_boundary_prefixes() {
        let message = b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=ab\n\n\
--ab\n\none\n--abc\nstill one\n--ab\n\ntwo\n";
        let (node, notes) = decode_noted(message);
        assert_eq!(notes, ["multipart without its closing boundary"]);
        assert_eq!(describe(&node), "MIME multipart(1: text, 2: text)");
        let texts = all_texts(message);
        assert_eq!(texts[0].0, b"one\n--abc\nstill one");
        assert_eq!(texts[1].0, b"two\n");
    }

    #[test]
    fn multipart_without_boundary_or_parts() {
        let (node, notes) =
            decode_noted(b"MIME-Version: 1.0\nContent-Type: multipart/mixed\n\nbody @@\n");
        assert_eq!(describe(&node), "MIME(text)");
        assert_eq!(notes, ["multipart without a boundary; read as text"]);
        let (node, notes) = decode_noted(
            b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=q\n\nno parts\n",
        );
        assert_eq!(describe(&node), "MIME multipart()");
        assert_eq!(notes, ["multipart without any part"]);
    }

    #[test]
    fn unknown_transfer_encoding_is_left_alone() {
        let message = b"MIME-Version: 1.0\nContent-Transfer-Encoding: x-uuencode\n\n@@\n";
        let (node, notes) = decode_noted(message);
        assert_eq!(describe(&node), "MIME(left as is)");
        assert_eq!(
            notes,
            ["unknown Content-Transfer-Encoding \"x-uuencode\"; left as is"]
        );
        assert_eq!(subst(message), None);
    }

    #[test]
    fn folded_headers_and_parameters() {
        let message = b"MIME-Version: 1.0\nContent-Type: multipart/mixed;\n\tcharset=x; BOUNDARY=\"a \\\"b\\\"\" ; x=y\n\n\
--a \"b\"\n\n@@\n--a \"b\"--\n";
        assert_eq!(all_texts(message)[0].0, b"@@");
        assert_eq!(parameter(b" name = tok ; rest").0, b"name");
        assert_eq!(parameter(b" name = tok ; rest").1, b"tok");
        assert_eq!(parameter(b" name = tok ; rest").2, b" rest");
        assert_eq!(parameter(b"flag; rest").2, b" rest");
        assert_eq!(parameter(b"q=\"unterminated").1, b"unterminated");
    }

    #[test]
    fn depth_is_limited() {
        let mut data = b"ip=@@\n".to_vec();
        for _ in 0..MAX_DEPTH + 2 {
            data = gzip(&data);
        }
        let (node, notes) = decode_noted(&data);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("nested encodings"), "{notes:?}");
        assert!(describe(&node).contains("left as is"));
        assert_eq!(subst(&data), None);
    }
}
