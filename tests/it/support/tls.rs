//! Test certificates: a throw-away CA and a server certificate for 127.0.0.1 and localhost.

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl tool (a
/// test-time helper only; the service itself uses rustls).
pub fn make_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect(
                "the openssl tool is needed to make a test certificate (apt-get install openssl)",
            );
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=clusterctx test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// A server on 127.0.0.1:0 serving HTTPS with a fresh certificate made in `dir`, and the CA
/// file that trusts it.
#[cfg(feature = "server")]
pub async fn spawn_https(
    dir: &std::path::Path,
) -> (clusterctx::server::Server, std::path::PathBuf) {
    let (ca, cert, key) = make_certificate(dir);
    let server = clusterctx::server::spawn(clusterctx::server::Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..clusterctx::server::Config::default()
    })
    .await
    .unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());
    (server, ca)
}
