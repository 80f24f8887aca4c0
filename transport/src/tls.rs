//! The listener's rustls configuration from PEM files: TLS 1.3 only, the ring provider,
//! client certificates required and verified against the configured CA.

use crate::config::TlsFiles;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why a TLS configuration could not be made; names the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(pub String);

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsConfigError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsConfigError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The certificate chain and private key of `files`.
fn identity(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let chain = certificates(&files.certificate_chain, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| TlsConfigError(format!("private key {}: {e}", files.private_key.display())))?;
    Ok((chain, key))
}

/// Every configuration here speaks TLS 1.3 only.
const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider of every configuration here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn versions_error(e: rustls::Error) -> TlsConfigError {
    TlsConfigError(format!("protocol versions: {e}"))
}

/// The certificate and key of `files` do not make a usable pair.
fn key_pair_error(files: &TlsFiles, e: rustls::Error) -> TlsConfigError {
    TlsConfigError(format!(
        "certificate {} with key {}: {e}",
        files.certificate_chain.display(),
        files.private_key.display()
    ))
}

/// The CA certificates of `path` as a root store (`what` names it in errors).
fn roots(path: &Path, what: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path, what)? {
        roots
            .add(ca)
            .map_err(|e| TlsConfigError(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A node link's client configuration for `files`: TLS 1.3, the node's certificate as the
/// client certificate, and the CA file as the only root (it signs every node's certificate).
///
/// ```
/// use agentwire_transport::{config::TlsFiles, tls::link_client_config};
/// let missing = TlsFiles { certificate_chain: "/nonexistent/n.pem".into(),
///     private_key: "/nonexistent/k.pem".into(), client_ca: "/nonexistent/ca.pem".into() };
/// assert!(link_client_config(&missing).is_err());
/// ```
pub fn link_client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let (chain, key) = identity(files)?;
    let roots = roots(&files.client_ca, "node CA")?;
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS13_ONLY)
        .map_err(versions_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| key_pair_error(files, e))?;
    Ok(Arc::new(config))
}

/// The server configuration for `files` (TLS 1.3, client certificates required).
///
/// ```
/// use agentwire_transport::{config::TlsFiles, tls::server_config};
/// let missing = TlsFiles { certificate_chain: "/nonexistent/c.pem".into(),
///     private_key: "/nonexistent/k.pem".into(), client_ca: "/nonexistent/ca.pem".into() };
/// let e = server_config(&missing).unwrap_err();
/// assert!(e.to_string().contains("/nonexistent/c.pem"));
/// ```
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let (chain, key) = identity(files)?;
    let roots = roots(&files.client_ca, "client CA")?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsConfigError(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS13_ONLY)
        .map_err(versions_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| key_pair_error(files, e))?;
    Ok(Arc::new(config))
}
