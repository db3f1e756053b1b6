//! HTTPS: a rustls acceptor (ring provider, no OpenSSL) from PEM certificate and key files.

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use anyhow::Context;
use tokio_rustls::{rustls, TlsAcceptor};

/// Builds the acceptor from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1). Offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let open = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the certificates in {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate in {}", cert_path.display());
    }
    let key = rustls_pemfile::private_key(&mut open(key_path)?)
        .with_context(|| format!("cannot parse the private key in {}", key_path.display()))?
        .with_context(|| format!("no PEM private key in {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the certificate {} and the key {} do not fit together",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
