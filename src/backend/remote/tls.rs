//! The roots `https://` and `grpcs://` upstreams are checked against: `upstream_ca_path`'s
//! bundle, or the system's certificates.

use std::sync::Arc;

/// A rustls client configuration trusting `ca_pem`'s certificates, or the system's roots.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("upstream_ca_path: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream_ca_path: {e}"))?;
            }
            if roots.is_empty() {
                return Err("upstream_ca_path holds no PEM certificate".into());
            }
        }
        None => {
            // Unreadable system certificates are skipped; none at all leaves TLS failing
            // loudly at the first handshake rather than at start.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
