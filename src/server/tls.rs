//! HTTPS: a rustls acceptor (ring provider, no OpenSSL) from PEM certificate and key files.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tokio_rustls::rustls::{
    self,
    pki_types::{
        pem::{self, PemObject},
        CertificateDer, PrivateKeyDer,
    },
};
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1). Offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the certificates in {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate in {}", cert_path.display());
    }
    let key = match PrivateKeyDer::from_pem_file(key_path) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            anyhow::bail!("no PEM private key in {}", key_path.display())
        }
        Err(e @ pem::Error::Io(_)) => {
            return Err(e).with_context(|| format!("cannot read {}", key_path.display()))
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot parse the private key in {}", key_path.display()))
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(cert: &Path, key: &Path) -> String {
        format!("{:#}", acceptor(cert, key).err().expect("an error"))
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();

        let message = error(&missing, &empty);
        assert!(
            message.starts_with(&format!("cannot read {}", missing.display())),
            "{message}"
        );
        let message = error(&empty, &empty);
        assert!(
            message.starts_with(&format!("no PEM certificate in {}", empty.display())),
            "{message}"
        );
        // Framed PEM is all the parser checks; the DER inside is looked at after the key.
        let framed = dir.path().join("framed.pem");
        std::fs::write(
            &framed,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let message = error(&framed, &missing);
        assert!(
            message.starts_with(&format!("cannot read {}", missing.display())),
            "{message}"
        );
        let message = error(&framed, &empty);
        assert!(
            message.starts_with(&format!("no PEM private key in {}", empty.display())),
            "{message}"
        );
        let broken_key = dir.path().join("broken-key.pem");
        std::fs::write(&broken_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        let message = error(&framed, &broken_key);
        assert!(
            message.starts_with(&format!(
                "cannot parse the private key in {}",
                broken_key.display()
            )),
            "{message}"
        );
        let message = error(&broken, &empty);
        assert!(
            message.starts_with(&format!(
                "cannot parse the certificates in {}",
                broken.display()
            )),
            "{message}"
        );
    }
}
