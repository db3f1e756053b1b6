//! The decoder and the re-encoder on small hand-made documents.

use std::io::{Read, Write};

use ::base64::engine::general_purpose::STANDARD;
use ::base64::Engine;
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use super::mime::parameter;
use super::qp::{decode_quoted_printable, encode_quoted_printable_value};
use super::tree::Replacements;
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
    let text = "line one with @@ in it, long enough to need several lines of base64\n".repeat(3);
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
    let (node, notes) =
        decode_noted(b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=q\n\nno parts\n");
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
