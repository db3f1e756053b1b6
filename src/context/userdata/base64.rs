//! base64 bodies: decoded leniently as email parsers do, re-encoded with padding in the
//! original layout (line length, line ending, surrounding whitespace).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{Decoder, Node, Place};

#[derive(Debug)]
pub(crate) struct Base64 {
    pub(super) data: Vec<u8>,
    layout: Base64Layout,
    pub(super) inner: Node,
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

/// Lenient decoding as email parsers do it: padding optional, stray low bits accepted.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

impl Decoder {
    pub(super) fn base64(&mut self, body: &[u8], place: &Place) -> Node {
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
}

impl Base64 {
    /// The body's bytes for new decoded `data`.
    pub(super) fn encode(&self, data: &[u8]) -> Vec<u8> {
        self.layout.encode(data)
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
