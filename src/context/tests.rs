//! The context file end to end: decoding, the block, placeholders and substitution over every
//! wrapping, with hand-made documents and property tests.

use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::io::Write;

const USERS: &str = "users=atlas:atlas:$6$4ZctFHqh$9kZHLCHVUvWBs76SjWxN2QfN.vATu7/AWh1dsVV8PRqm6UdBCvcPG8YVE4epYV2dVMg.nJxG1yqbi/8q8VPhO1";

/// The master example of the legacy documentation.
fn seed_master() -> String {
    format!(
        "[amiconfig]\nplugins=cernvm\n\n[cernvm]\norganisations=ATLAS\nshell=/bin/bash\n\
config_url=http://cernvm.cern.ch/config\n{USERS}\nedition=Desktop\nscreenRes=1280x700\n\
keyboard=us\nstartXDM=on\n\n[ucernvm-begin]\ncvm_cluster_master=yes\n\
cvm_cluster_pin=enico1qq0oey\ncvmfs_branch=cernvm-sl7.cern.ch\ncvmfs_server=hepvm.cern.ch\n\
cvmfs_path=cvm4\n[ucernvm-end]\n"
    )
}

/// The slave example of the legacy documentation.
fn seed_worker() -> String {
    format!(
        "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n[amiconfig]\n\
plugins=cernvm\n\n[cernvm]\norganisations=ATLAS\nshell=/bin/bash\n\
config_url=http://cernvm.cern.ch/config\n{USERS}\nedition=Desktop\nscreenRes=1280x700\n\
keyboard=us\nstartXDM=on\n\n[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n\
cvmfs_branch=cernvm-sl7.cern.ch\ncvmfs_server=hepvm.cern.ch\ncvmfs_path=cvm4\n[ucernvm-end]\n"
    )
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ip() -> BTreeMap<String, String> {
    values(&[("master_ip", "10.10.25.5")])
}

fn file(bytes: impl Into<Vec<u8>>) -> ContextFile {
    ContextFile::from_bytes("worker.txt", bytes)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn seed_master_example() {
    let f = file(seed_master());
    let block = f.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_master"), Some("yes"));
    assert_eq!(block.get("CVM_CLUSTER_PIN"), Some("enico1qq0oey"));
    assert_eq!(block.get("cvm_service_url"), None);
    assert_eq!(
        block.entry("cvmfs_path").unwrap().location.to_string(),
        "worker.txt:19"
    );
    assert_eq!(block.location().to_string(), "worker.txt:14");
    assert_eq!(
        legacy_bool(block.get("cvm_cluster_master").unwrap()),
        Some(true)
    );
    assert!(f.placeholders().is_empty());
    assert_eq!(f.substitute(&ip()).unwrap(), None);
    assert!(f.warnings().is_empty());
    assert_eq!(f.structure(), "text");
}

#[test]
fn seed_worker_example() {
    let f = file(seed_worker());
    let block = f.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_master"), None);
    assert_eq!(block.get("cvm_cluster_pin"), Some("enico1qq0oey"));
    assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
    let out = f.substitute(&ip()).unwrap().unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        seed_worker().replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
    );
}

#[test]
fn crlf_file() {
    let text = "a=###MASTER_IP_PLACEHOLDER###\r\n[ucernvm-begin]\r\ncvm_cluster_pin=abc\r\n[ucernvm-end]\r\n";
    let f = file(text);
    assert_eq!(
        f.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("abc")
    );
    let out = f.substitute(&ip()).unwrap().unwrap();
    assert_eq!(
        out,
        text.replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
            .as_bytes()
    );
}

#[test]
fn bom_before_the_block() {
    let f = file(
        &b"\xEF\xBB\xBF[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n###X_PLACEHOLDER###"[..],
    );
    assert_eq!(
        f.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("abc")
    );
    let out = f.substitute(&values(&[("x", "v")])).unwrap().unwrap();
    assert_eq!(
        out,
        b"\xEF\xBB\xBF[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\nv"
    );
}

#[test]
fn block_at_end_of_file_without_newline() {
    let f =
        file("ip=###MASTER_IP_PLACEHOLDER###\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]");
    assert_eq!(
        f.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("abc")
    );
    assert_eq!(
        f.substitute(&ip()).unwrap().unwrap(),
        b"ip=10.10.25.5\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]"
    );
}

#[test]
fn no_block_means_nothing_to_do() {
    let f = file("#cloud-config\nruncmd: []\n");
    assert_eq!(f.block().unwrap(), None);
}

#[test]
fn error_messages_name_file_and_line() {
    let mut text = "x\n".repeat(11);
    text.push_str("[ucernvm-begin]\ncvm_cluster_pin=abc\n");
    let err = file(text).block().unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker.txt:12: [ucernvm-begin] without [ucernvm-end]"
    );
    assert_eq!(err.line(), Some(12));
    assert_eq!(err.path(), Path::new("worker.txt"));

    let err = file("[ucernvm-begin]\na=1\n[ucernvm-begin]\n[ucernvm-end]\n")
        .block()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker.txt:3: [ucernvm-begin] inside the block opened at line 1"
    );

    let err = file(&b"[ucernvm-begin]\na=\xFF\n[ucernvm-end]\n"[..])
        .block()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker.txt:2: line inside the ucernvm block is not valid UTF-8"
    );
}

#[test]
fn repeated_blocks_must_agree() {
    let same =
        "[ucernvm-begin]\na=1\nb=2\n[ucernvm-end]\n[ucernvm-begin]\nb=2\nA=0\nA=1\n[ucernvm-end]\n";
    let block = file(same).block().unwrap().unwrap();
    assert_eq!(block.location().line, 1);
    let differ = "[ucernvm-begin]\na=1\n[ucernvm-end]\n\n[ucernvm-begin]\na=2\n[ucernvm-end]\n";
    let err = file(differ).block().unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker.txt:5: a second ucernvm block that differs from the one at worker.txt:1"
    );
}

#[test]
fn placeholders_in_the_block_are_neither_reported_nor_replaced() {
    let text = "[ucernvm-begin]\ncvm_service_url=###URL_PLACEHOLDER###\n[ucernvm-end]\nx=###MASTER_IP_PLACEHOLDER###\n";
    let f = file(text);
    assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
    let both = values(&[("master_ip", "10.0.0.1"), ("url", "http:/evil")]);
    assert_eq!(
        String::from_utf8(f.substitute(&both).unwrap().unwrap()).unwrap(),
        text.replace("###MASTER_IP_PLACEHOLDER###", "10.0.0.1")
    );
    // An unclosed block reaches to the end of its text.
    let f = file("a=###A_PLACEHOLDER###\n[ucernvm-begin]\nb=###B_PLACEHOLDER###\n");
    assert_eq!(f.placeholders(), BTreeSet::from(["a".to_string()]));
}

#[test]
fn non_utf8_bytes_outside_the_block_are_preserved() {
    let text = b"\xFF\xFE binary \x00\x80 ###MASTER_IP_PLACEHOLDER###\xC3\x28\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\xF0\n";
    let f = file(&text[..]);
    assert_eq!(
        f.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("abc")
    );
    let out = f.substitute(&ip()).unwrap().unwrap();
    let mut expected = b"\xFF\xFE binary \x00\x80 10.10.25.5\xC3\x28\n".to_vec();
    expected.extend_from_slice(b"[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\xF0\n");
    assert_eq!(out, expected);
}

#[test]
fn values_are_checked_and_only_given_keys_replaced() {
    let f = file("a=###MASTER_IP_PLACEHOLDER### b=###DB_PLACEHOLDER###\n");
    let err = f
        .substitute(&values(&[("master_ip", "10.0.0.1\nrm -rf /")]))
        .unwrap_err();
    assert!(
        matches!(&err, ContextError::Value { key, source: ValueError::Control { .. }, .. } if key == "master_ip")
    );
    assert_eq!(
        err.to_string(),
        "worker.txt: refusing the value of master_ip"
    );
    assert!(matches!(
        f.substitute(&values(&[("db", "x$(reboot)")])),
        Err(ContextError::Value { .. })
    ));
    // A bad value for a key the file does not reference is not this file's business.
    assert_eq!(
        f.substitute(&values(&[("db", "db1"), ("other", "bad\n")]))
            .unwrap()
            .unwrap(),
        b"a=###MASTER_IP_PLACEHOLDER### b=db1\n"
    );
    assert_eq!(f.substitute(&values(&[("other", "x")])).unwrap(), None);
    assert_eq!(f.substitute(&BTreeMap::new()).unwrap(), None);
    // Keys are matched in lower case, as placeholders() reports them.
    assert_eq!(f.substitute(&values(&[("DB", "db1")])).unwrap(), None);
}

const MULTIPART_HEAD: &str =
    "Content-Type: multipart/mixed; boundary=\"===============2954587519432768337==\"\n\
MIME-Version: 1.0\n\n--===============2954587519432768337==\n\
Content-Type: text/ucernvm; charset=\"us-ascii\"\nMIME-Version: 1.0\n\
Content-Transfer-Encoding: 7bit\n\n";

#[test]
fn block_inside_a_mime_part_has_file_line_numbers() {
    let text = format!(
        "{MULTIPART_HEAD}[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\n\
--===============2954587519432768337==--\n"
    );
    let f = file(text);
    let block = f.block().unwrap().unwrap();
    assert_eq!(
        block.entry("cvm_cluster_pin").unwrap().location.to_string(),
        "worker.txt:10"
    );
    assert_eq!(f.structure(), "MIME multipart(1: text)");
}

#[test]
fn block_and_placeholders_inside_a_base64_part() {
    let script =
        "#!/bin/sh\n[ucernvm-begin]\ncvm_cluster_pin=abc\n\necho ###MASTER_IP_PLACEHOLDER###\n";
    let encoded = STANDARD.encode(script);
    let text = format!(
        "{MULTIPART_HEAD}hello\n\n--===============2954587519432768337==\n\
Content-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n{encoded}\n\n\
--===============2954587519432768337==--\n"
    );
    let f = file(text.clone());
    let err = f.block().unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker.txt[part 2, base64]:2: [ucernvm-begin] without [ucernvm-end]"
    );
    let fixed = script.replace("\n\necho", "\n[ucernvm-end]\necho");
    let text = text.replace(&encoded, &STANDARD.encode(&fixed));
    let f = file(text.clone());
    let block = f.block().unwrap().unwrap();
    assert_eq!(block.location().to_string(), "worker.txt[part 2, base64]:2");
    assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
    let out = String::from_utf8(f.substitute(&ip()).unwrap().unwrap()).unwrap();
    let expected = text.replace(
        &STANDARD.encode(&fixed),
        &STANDARD.encode(fixed.replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")),
    );
    assert_eq!(out, expected);
}

#[test]
fn gzip_file() {
    let worker = seed_worker();
    let f = file(gzip(worker.as_bytes()));
    assert_eq!(f.structure(), "gzip(text)");
    assert_eq!(
        f.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("enico1qq0oey")
    );
    assert_eq!(
        f.block().unwrap().unwrap().location().to_string(),
        "worker.txt[gzip]:17"
    );
    let out = f.substitute(&ip()).unwrap().unwrap();
    assert_eq!(
        gunzip(&out),
        worker
            .replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
            .as_bytes()
    );
    assert_eq!(
        ContextFile::from_bytes("w", out).substitute(&ip()).unwrap(),
        None
    );
}

#[test]
fn warnings_name_the_place() {
    let text = format!(
        "{MULTIPART_HEAD}[ucernvm-end]\n--===============2954587519432768337==\n\
Content-Transfer-Encoding: base64\n\n!!!\n--===============2954587519432768337==--\n"
    );
    let warnings = file(text).warnings();
    assert_eq!(
        warnings,
        [
            "worker.txt[part 2, base64]: not valid base64 (Invalid symbol 33, offset 0.); left as is",
            "worker.txt:9: [ucernvm-end] outside a block is ignored",
        ]
    );
}

#[test]
fn load_reads_and_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data");
    std::fs::write(&path, seed_worker()).unwrap();
    let f = ContextFile::load(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.raw(), seed_worker().as_bytes());
    let missing = dir.path().join("missing");
    let err = ContextFile::load(&missing).unwrap_err();
    assert!(matches!(err, ContextError::Read { .. }));
    assert_eq!(err.path(), missing);
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Inputs that a quadratic step would take minutes on finish at once.
#[test]
fn large_inputs_stay_linear() {
    let started = std::time::Instant::now();
    let mut qp = b"MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n".to_vec();
    qp.resize(qp.len() + (1 << 20), b' ');
    qp.extend_from_slice(b"###X_PLACEHOLDER###");
    let f = file(qp);
    assert_eq!(f.placeholders(), BTreeSet::from(["x".to_string()]));

    let mut block = b"[ucernvm-begin]\n".to_vec();
    for i in 0..60_000 {
        block.extend_from_slice(format!("key{}=v\n", i % 30_000).as_bytes());
    }
    block.extend_from_slice(b"[ucernvm-end]\n");
    let found = file(block).block().unwrap().unwrap();
    assert_eq!(found.entries().len(), 60_000);
    assert_eq!(found.warnings().len(), 30_000);

    let mut multipart =
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n".to_vec();
    for _ in 0..10_000 {
        multipart.extend_from_slice(b"--b\n\n###X_PLACEHOLDER###\n");
    }
    multipart.extend_from_slice(b"--b--\n");
    let f = file(multipart);
    let out = f.substitute(&values(&[("x", "v")])).unwrap().unwrap();
    assert_eq!(out.len(), f.raw().len() - 10_000 * 18);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Segment {
        Bytes(Vec<u8>),
        Placeholder(String),
    }

    /// How the generated text is wrapped into a file.
    #[derive(Debug, Clone)]
    enum Wrap {
        Plain,
        Gzip,
        SevenBit,
        Base64 { line_len: usize, crlf: bool },
        QuotedPrintable { line_len: usize },
    }

    fn segments() -> impl Strategy<Value = Vec<Segment>> {
        // No `#` or `[` in free text: neither placeholders nor block markers can form there.
        let bytes = proptest::collection::vec(any::<u8>(), 0..24).prop_map(|mut b| {
            for x in &mut b {
                if *x == b'#' || *x == b'[' {
                    *x = b'x';
                }
            }
            Segment::Bytes(b)
        });
        let placeholder = "[A-Za-z0-9_-]{1,12}".prop_map(Segment::Placeholder);
        proptest::collection::vec(prop_oneof![2 => bytes, 1 => placeholder], 0..12)
    }

    fn wraps() -> impl Strategy<Value = Wrap> {
        prop_oneof![
            Just(Wrap::Plain),
            Just(Wrap::Gzip),
            Just(Wrap::SevenBit),
            (1usize..80, any::<bool>())
                .prop_map(|(line_len, crlf)| Wrap::Base64 { line_len, crlf }),
            (4usize..40).prop_map(|line_len| Wrap::QuotedPrintable { line_len }),
        ]
    }

    fn render(segments: &[Segment], values: &BTreeMap<String, String>) -> Vec<u8> {
        // The leading `x` keeps the text from starting with the gzip magic; the trailing
        // one keeps a final CR from joining the delimiter's line break.
        let mut out = b"x".to_vec();
        for segment in segments {
            match segment {
                Segment::Bytes(b) => out.extend_from_slice(b),
                Segment::Placeholder(name) => match values.get(&name.to_ascii_lowercase()) {
                    Some(value) => out.extend_from_slice(value.as_bytes()),
                    None => out.extend_from_slice(format!("###{name}_PLACEHOLDER###").as_bytes()),
                },
            }
        }
        out.push(b'x');
        out
    }

    const HEAD: &[u8] = b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b0undary_=\"\n\n--=_b0undary_=\n\nfirst part ###KEEP_PLACEHOLDER\n--=_b0undary_=\n";
    const TAIL: &[u8] = b"\n--=_b0undary_=--\nepilogue ###MASTER_IP_PLACEHOLDER###\n";

    fn qp_encode(text: &[u8], line_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut column = 0;
        for &b in text {
            let piece = if (b'!'..=b'~').contains(&b) && b != b'=' {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if column + piece.len() > line_len {
                out.extend_from_slice(b"=\n");
                column = 0;
            }
            column += piece.len();
            out.extend_from_slice(&piece);
        }
        out
    }

    fn wrap(text: &[u8], how: &Wrap) -> Vec<u8> {
        let part = |headers: &[u8], body: &[u8]| [HEAD, headers, b"\n", body, TAIL].concat();
        match how {
            Wrap::Plain => text.to_vec(),
            Wrap::Gzip => gzip(text),
            Wrap::SevenBit => part(b"Content-Transfer-Encoding: 8bit\n", text),
            Wrap::Base64 { line_len, crlf } => {
                let encoded = STANDARD.encode(text);
                let eol: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
                let body = encoded
                    .as_bytes()
                    .chunks(*line_len)
                    .collect::<Vec<_>>()
                    .join(eol);
                part(b"Content-Transfer-Encoding: base64\n", &body)
            }
            Wrap::QuotedPrintable { line_len } => part(
                b"Content-Transfer-Encoding: quoted-printable\n",
                &qp_encode(text, *line_len),
            ),
        }
    }

    /// The single generated text inside a file, decoded.
    fn generated_text(f: &ContextFile, how: &Wrap) -> Vec<u8> {
        let texts = userdata::texts(&f.root, &f.raw);
        let index = match how {
            Wrap::Plain | Wrap::Gzip => 0,
            _ => 1,
        };
        texts[index].text.to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn substitution_replaces_exactly_the_placeholders(
            segments in segments(),
            how in wraps(),
            value_seed in "[A-Za-z0-9.:_-]{1,16}",
        ) {
            let names: BTreeSet<String> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Placeholder(n) => Some(n.to_ascii_lowercase()),
                    Segment::Bytes(_) => None,
                })
                .collect();
            let all: BTreeMap<String, String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("{value_seed}{i}")))
                .collect();
            let half: BTreeMap<String, String> =
                all.iter().step_by(2).map(|(k, v)| (k.clone(), v.clone())).collect();

            let original = wrap(&render(&segments, &BTreeMap::new()), &how);
            let f = ContextFile::from_bytes("p", original.clone());
            // The epilogue's placeholder is structure, not text.
            prop_assert_eq!(f.placeholders(), names.clone());
            prop_assert_eq!(f.substitute(&BTreeMap::new()).unwrap(), None);

            let out = f.substitute(&all).unwrap();
            prop_assert_eq!(out.is_some(), !names.is_empty());
            let out = out.unwrap_or(original.clone());
            let g = ContextFile::from_bytes("p", out.clone());
            prop_assert_eq!(g.structure(), f.structure());
            prop_assert_eq!(generated_text(&g, &how), render(&segments, &all));
            // Nothing outside the generated part moved.
            if !matches!(how, Wrap::Plain | Wrap::Gzip) {
                prop_assert!(out.starts_with(HEAD));
                prop_assert!(out.ends_with(TAIL));
            }
            // Once every placeholder is filled, substituting again changes nothing.
            prop_assert_eq!(g.substitute(&all).unwrap(), None);

            // Partial values fill only their own placeholders.
            if let Some(partial) = f.substitute(&half).unwrap() {
                let h = ContextFile::from_bytes("p", partial);
                prop_assert_eq!(generated_text(&h, &how), render(&segments, &half));
            }
        }
    }
}
