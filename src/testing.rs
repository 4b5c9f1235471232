//! Fixtures for tests and benchmarks (feature `testing`): a throw-away PKI for the mutual-TLS
//! listener, made with rcgen. Never for production certificates.
// A fixture: a failure to build a test certificate is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
pub use rcgen::{ExtendedKeyUsagePurpose, SanType};
use time::{Duration, OffsetDateTime};

use crate::client::TlsFiles;
use crate::service::tls::{
    CLOSE_GRACE_SECS, DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTION_AGE_SECS,
    DEFAULT_MAX_CONNECTIONS, TlsConfig,
};

/// A certificate authority that issues server and client certificates and CRLs.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What to put in a certificate.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Subject common name.
    pub cn: Option<String>,
    /// Subject organization.
    pub org: Option<String>,
    /// Subject alternative names.
    pub sans: Vec<SanType>,
    /// The one extended key usage.
    pub usage: ExtendedKeyUsagePurpose,
    /// Serial number (what a CRL names).
    pub serial: u64,
    /// Valid from 30 days ago until yesterday, instead of from yesterday for 30 days.
    pub expired: bool,
}

impl Leaf {
    /// A client certificate whose identity is `uri` (a SPIFFE ID), CN `workload`.
    pub fn client(uri: &str, serial: u64) -> Self {
        Self {
            cn: Some("workload".into()),
            org: None,
            sans: vec![SanType::URI(uri.try_into().unwrap())],
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            serial,
            expired: false,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(serial: u64) -> Self {
        Self {
            cn: Some("keywarden".into()),
            org: None,
            sans: vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            ],
            usage: ExtendedKeyUsagePurpose::ServerAuth,
            serial,
            expired: false,
        }
    }
}

impl Ca {
    /// A new self-signed CA (P-256) named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a certificate; returns (certificate PEM, private key PEM).
    pub fn issue(&self, leaf: &Leaf) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        if let Some(cn) = &leaf.cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(o) = &leaf.org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.subject_alt_names = leaf.sans.clone();
        params.extended_key_usages = vec![leaf.usage.clone()];
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = if leaf.expired {
            (now - Duration::days(30), now - Duration::days(1))
        } else {
            (now - Duration::days(1), now + Duration::days(30))
        };
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A CRL (PEM) revoking `serials`, next update in a week.
    pub fn crl(&self, serials: &[u64]) -> String {
        self.crl_updated(serials, false)
    }

    /// A CRL (PEM) revoking `serials`; `stale`: its next update was an hour ago.
    pub fn crl_updated(&self, serials: &[u64], stale: bool) -> String {
        let now = OffsetDateTime::now_utc();
        let (this_update, next_update) = if stale {
            (now - Duration::days(8), now - Duration::hours(1))
        } else {
            (now - Duration::hours(1), now + Duration::days(7))
        };
        CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// Writes a certificate and key (mode 0600) as `<name>.crt`/`<name>.key` in `dir`; returns the
/// files a client needs, with `ca` as the CA it trusts.
pub fn write_pair(dir: &Path, name: &str, ca: &Path, (cert, key): (String, String)) -> TlsFiles {
    let files = TlsFiles {
        ca: ca.to_path_buf(),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    files
}

/// A complete PKI for one service: a server CA and its certificate for the listener, a client
/// CA (with a CRL revoking `revoked`), all written into a temporary directory.
pub struct Pki {
    /// Where the files are.
    pub dir: tempfile::TempDir,
    /// The CA that issues client certificates.
    pub client_ca: Ca,
    /// The server CA's certificate (what clients trust).
    pub server_ca_pem: PathBuf,
    /// The `[tls]` configuration for the listener (with a CRL file in `crls`).
    pub server: TlsConfig,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Makes the PKI; the listener's address is `listen`.
    pub fn new(listen: std::net::SocketAddr, revoked: &[u64]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keywarden-pki-")
            .tempdir()
            .unwrap();
        let server_ca = Ca::new("keywarden test server CA");
        let client_ca = Ca::new("keywarden test client CA");
        let server_ca_pem = dir.path().join("server-ca.crt");
        std::fs::write(&server_ca_pem, server_ca.pem()).unwrap();
        let client_ca_pem = dir.path().join("client-ca.crt");
        std::fs::write(&client_ca_pem, client_ca.pem()).unwrap();
        let server = write_pair(
            dir.path(),
            "server",
            &server_ca_pem,
            server_ca.issue(&Leaf::server(1)),
        );
        let crl = dir.path().join("client-ca.crl");
        std::fs::write(&crl, client_ca.crl(revoked)).unwrap();
        Self {
            server: TlsConfig {
                listen,
                cert: server.cert,
                key: server.key,
                client_ca: client_ca_pem,
                crls: vec![crl],
                handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
                max_connection_age_secs: DEFAULT_MAX_CONNECTION_AGE_SECS,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                close_grace_secs: CLOSE_GRACE_SECS,
            },
            dir,
            client_ca,
            server_ca_pem,
        }
    }

    /// Issues a client certificate from the client CA and writes it as `<name>.crt/.key`.
    pub fn client(&self, name: &str, leaf: &Leaf) -> TlsFiles {
        write_pair(
            self.dir.path(),
            name,
            &self.server_ca_pem,
            self.client_ca.issue(leaf),
        )
    }

    /// The `[tls]` section for a service config file.
    pub fn toml(&self) -> String {
        let t = &self.server;
        format!(
            "[tls]\nlisten = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\ncrls = [{}]\nmax_connection_age_secs = {}\nclose_grace_secs = {}\n",
            t.listen,
            t.cert.display(),
            t.key.display(),
            t.client_ca.display(),
            t.crls
                .iter()
                .map(|c| format!("\"{}\"", c.display()))
                .collect::<Vec<_>>()
                .join(", "),
            t.max_connection_age_secs,
            t.close_grace_secs
        )
    }
}
