//! gzip layers: decompressed to be read again as a document, recompressed with the original
//! header's name, comment, extra field, time and OS byte when a text inside changed.

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use super::{Decoder, Node, Place};

pub(super) const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

#[derive(Debug)]
pub(crate) struct Gzip {
    header: GzipHeader,
    pub(super) data: Vec<u8>,
    pub(super) inner: Node,
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

impl Decoder {
    pub(super) fn gzip(&mut self, bytes: &[u8], place: &Place) -> Node {
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
}

impl Gzip {
    /// The layer's bytes for new decompressed `data`.
    pub(super) fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.header.compress(data)
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
