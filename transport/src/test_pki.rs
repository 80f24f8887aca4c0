//! Certificates made at run time for tests (rcgen): a CA, server and client certificates
//! (valid or expired), the daemon's PEM files in a temporary directory, and client
//! configurations. Feature `test-pki`; never for production keys.
//!
//! ```
//! use agentwire_transport::test_pki::Pki;
//! let pki = Pki::new();
//! let client = pki.ca.client("ocr-1");
//! let config = pki.client_config(Some(&client));
//! assert!(pki.files.client_ca.exists());
//! # drop(config);
//! ```
#![allow(missing_docs)]

use crate::config::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::Arc;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate and its key, PEM and DER.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// A CA that issues server and client certificates.
pub struct Ca {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, mut params: CertificateParams, common_name: &str) -> Issued {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, "agentwire daemon")
    }

    /// A client certificate named `cn` (also as a DNS SAN `cn.agents.test`).
    pub fn client(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec![format!("{cn}.agents.test")]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, cn)
    }

    /// A node's certificate (a node link's both ends): named `cn`, for localhost and
    /// 127.0.0.1, good for server and client authentication.
    pub fn node(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params, cn)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec![format!("{cn}.agents.test")]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params, cn)
    }
}

/// The daemon's PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub files: TlsFiles,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("agentwire test CA");
        let server = ca.server();
        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let files = TlsFiles {
            certificate_chain: write("daemon.crt", &server.cert_pem),
            private_key: write("daemon.key", &server.key_pem),
            client_ca: write("clients-ca.crt", &ca.cert_pem),
        };
        Self { dir, ca, files }
    }

    /// PEM files for node `name` (its certificate from [`Ca::node`], its key, this CA) in
    /// this PKI's directory.
    pub fn node_files(&self, name: &str) -> TlsFiles {
        let node = self.ca.node(name);
        let write = |file: String, text: &str| -> PathBuf {
            let path = self.dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        TlsFiles {
            certificate_chain: write(format!("node-{name}.crt"), &node.cert_pem),
            private_key: write(format!("node-{name}.key"), &node.key_pem),
            client_ca: self.files.client_ca.clone(),
        }
    }

    /// A client configuration trusting this PKI's CA, presenting `client` (or nothing).
    pub fn client_config(&self, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca, client)
    }
}

/// A client configuration trusting `ca`, presenting `client` (or nothing).
pub fn client_config(ca: &Ca, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(issued) => builder
            .with_client_auth_cert(
                vec![issued.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
            )
            .unwrap(),
    };
    Arc::new(config)
}
