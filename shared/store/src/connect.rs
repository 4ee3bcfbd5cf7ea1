//! How the store reaches its database: libpq's `sslmode` and `sslrootcert` read from the URL (which
//! tokio-postgres does not understand beyond `disable`/`prefer`/`require`), a CA bundle that can also
//! come from the secret, the rustls verifiers each mode needs, and the `pgbouncer=true` marker of a
//! transaction-mode pooler.
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` | if the server offers it | no; chain only if a CA is given (as libpq) |
//! | `require` | always | no; chain only if a CA is given (as libpq) |
//! | `verify-ca` | always | chain against the CA (the web PKI roots if none is given) |
//! | `verify-full`, and when absent | always | chain and host name |
//!
//! A CA is given by `sslrootcert=<file>` (PEM), `sslrootcert=system` (the web PKI roots, and then
//! only `verify-full`, as libpq 16), or [`ConnectOptions::ca_pem`] (the secret's `database_ca_pem`).
//! Errors never quote the URL, so never its password.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::StoreError;

/// What reaching the database needs beyond its URL.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// CA certificates (PEM) that sign the database server's certificate, added to `sslrootcert`'s:
    /// the secret's `database_ca_pem` (the RDS global bundle, Supabase's CA, ...). Giving one makes
    /// `require` check the chain (as libpq does when it has a root certificate).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::BadUrl(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where `sslrootcert` points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// `sslrootcert=system`: the web PKI roots.
    System,
    File(String),
}

/// A database URL with the parameters tokio-postgres does not know taken out.
#[derive(Debug)]
pub(crate) struct DbUrl {
    /// The connection string for tokio-postgres, without `sslmode`, `sslrootcert` and `pgbouncer`.
    pub(crate) rest: String,
    /// `None` when the URL has no `sslmode` (then `verify-full`).
    pub(crate) mode: Option<SslMode>,
    root_cert: Option<RootCert>,
    /// `pgbouncer=true`: a transaction-mode pooler (no session state between transactions).
    pub(crate) pooler: bool,
}

impl DbUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        let mut found = Found::default();
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_owned(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        if !found.take(&percent_decode(key)?, &percent_decode(value)?)? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            // The `key=value` form, with unquoted values only.
            if url.contains('\'') || url.contains('\\') {
                return Err(StoreError::BadUrl(
                    "quoted values in a key=value connection string are not supported: use a postgres:// URL"
                        .into(),
                ));
            }
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                let (key, value) = word.split_once('=').ok_or_else(|| {
                    StoreError::BadUrl(
                        "a key=value connection string has a word without `=`".into(),
                    )
                })?;
                if !found.take(key, value)? {
                    kept.push(word);
                }
            }
            kept.join(" ")
        };
        Ok(DbUrl {
            rest,
            mode: found.mode,
            root_cert: found.root_cert,
            pooler: found.pooler,
        })
    }

    /// The mode in effect: the URL's, `verify-full` when it has none.
    pub(crate) fn effective_mode(&self) -> SslMode {
        self.mode.unwrap_or(SslMode::VerifyFull)
    }

    /// tokio-postgres's mode (whether to use TLS); the checks are the verifier's.
    pub(crate) fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.effective_mode() {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The rustls configuration of this URL's mode, with `options`' CA.
    pub(crate) fn tls_config(
        &self,
        options: &ConnectOptions,
    ) -> Result<rustls::ClientConfig, StoreError> {
        let mode = self.effective_mode();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        if mode == SslMode::Disable {
            // No TLS: the CA settings are not read (as libpq), only a configuration to satisfy the
            // connector, which tokio-postgres never calls.
            return Ok(
                rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| StoreError::BadUrl(format!("TLS set-up failed: {e}")))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoCheck(provider)))
                    .with_no_client_auth(),
            );
        }
        if self.root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(StoreError::BadUrl(format!(
                "sslrootcert=system needs sslmode=verify-full (as libpq), not {}",
                mode.as_str()
            )));
        }
        let mut given: Vec<CertificateDer<'static>> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut system = false;
        match &self.root_cert {
            Some(RootCert::System) => {
                system = true;
                names.push("the web PKI roots (sslrootcert=system)");
            }
            Some(RootCert::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    StoreError::BadUrl(format!("cannot read sslrootcert file {path}: {e}"))
                })?;
                given.extend(certificates(&pem, "the sslrootcert file")?);
                names.push("the sslrootcert file");
            }
            None => {}
        }
        if let Some(pem) = options.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
            given.extend(certificates(pem.as_bytes(), "database_ca_pem")?);
            names.push("database_ca_pem");
        }
        let has_ca = !given.is_empty() || system;
        let check = match mode {
            SslMode::VerifyFull => Check::Full,
            SslMode::VerifyCa => Check::Chain,
            _ if has_ca => Check::Chain,
            _ => Check::Nothing,
        };
        if !has_ca {
            system = true;
            names.push("the web PKI roots (no sslrootcert or database_ca_pem given)");
        }
        let mut roots = RootCertStore::empty();
        if system {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in given {
            roots.add(cert).map_err(|e| {
                StoreError::BadUrl(format!(
                    "a CA certificate of {} is unusable: {e}",
                    names.join(" and ")
                ))
            })?;
        }
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(NoCheck(provider.clone())),
            Check::Chain | Check::Full => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| StoreError::BadUrl(format!("TLS set-up failed: {e}")))?;
                Arc::new(Explained {
                    inner: webpki,
                    names: check == Check::Full,
                    mode,
                    roots: names.join(" and "),
                })
            }
        };
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::BadUrl(format!("TLS set-up failed: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }
}

#[derive(Default)]
struct Found {
    mode: Option<SslMode>,
    root_cert: Option<RootCert>,
    pooler: bool,
}

impl Found {
    /// Takes the parameter if it is ours; `false` leaves it to tokio-postgres.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, StoreError> {
        match key {
            "sslmode" => self.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => {
                self.root_cert = match value {
                    "" => None,
                    "system" => Some(RootCert::System),
                    path => Some(RootCert::File(path.to_owned())),
                }
            }
            "pgbouncer" => {
                self.pooler = match value {
                    "true" | "1" | "on" | "yes" => true,
                    "false" | "0" | "off" | "no" | "" => false,
                    _ => {
                        return Err(StoreError::BadUrl("pgbouncer must be true or false".into()));
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::BadUrl("a URL parameter has a bad %-escape".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::BadUrl("a URL parameter is not UTF-8".into()))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::BadUrl(format!("{what} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(StoreError::BadUrl(format!(
            "{what} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"
        )));
    }
    Ok(certs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// `require` (and `prefer`) without a CA: encrypts, does not check who answers. The handshake's
/// signatures are still checked against the certificate presented.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The web PKI check (`verify-ca`: the chain only; `verify-full`: and the host name), with failures
/// that say what to change.
#[derive(Debug)]
struct Explained {
    inner: Arc<WebPkiServerVerifier>,
    /// Whether the host name must be in the certificate.
    names: bool,
    mode: SslMode,
    roots: String,
}

#[derive(Debug)]
struct Hint(String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}

impl ServerCertVerifier for Explained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hint = |text: String| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Hint(
                text,
            )))))
        };
        // WebPkiServerVerifier checks the chain first, then the name.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(
                e @ (CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }),
            )) => Err(hint(format!(
                "the server's certificate is not valid for the host `{}` (sslmode={}): {e}; connect \
                 by a name the certificate holds, or use sslmode=verify-ca to check the CA only",
                server_name.to_str(),
                self.mode.as_str()
            ))),
            Err(rustls::Error::InvalidCertificate(
                e @ (CertificateError::UnknownIssuer | CertificateError::BadSignature),
            )) => Err(hint(format!(
                "the server's certificate is not signed by a CA of {} (sslmode={}): {e:?}; give the \
                 database's CA bundle with sslrootcert=<file> or the secret's database_ca_pem (the \
                 RDS global bundle, or Supabase's CA from its dashboard)",
                self.roots,
                self.mode.as_str()
            ))),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_out_and_the_rest_kept() {
        let u = DbUrl::parse(
            "postgres://app:hunter2@db.example.com:6543/postgres?sslmode=verify-ca&application_name=x&sslrootcert=%2Ftmp%2Fca.pem&pgbouncer=true",
        )
        .unwrap();
        assert_eq!(
            u.rest,
            "postgres://app:hunter2@db.example.com:6543/postgres?application_name=x"
        );
        assert_eq!(u.mode, Some(SslMode::VerifyCa));
        assert_eq!(u.root_cert, Some(RootCert::File("/tmp/ca.pem".into())));
        assert!(u.pooler);
        assert_eq!(
            u.tokio_mode(),
            tokio_postgres::config::SslMode::Require,
            "verify-ca always encrypts"
        );

        let u = DbUrl::parse("postgresql://h/db?sslmode=disable").unwrap();
        assert_eq!(u.rest, "postgresql://h/db");
        assert_eq!(u.tokio_mode(), tokio_postgres::config::SslMode::Disable);
        assert!(!u.pooler);

        let u = DbUrl::parse("host=h dbname=d sslmode=allow sslrootcert=system user=u").unwrap();
        assert_eq!(u.rest, "host=h dbname=d user=u");
        assert_eq!(u.tokio_mode(), tokio_postgres::config::SslMode::Prefer);
        assert_eq!(u.root_cert, Some(RootCert::System));
    }

    #[test]
    fn without_sslmode_the_certificate_and_name_are_checked() {
        let u = DbUrl::parse("postgres://u:pw@h/db").unwrap();
        assert_eq!(u.mode, None);
        assert_eq!(u.effective_mode(), SslMode::VerifyFull);
        assert_eq!(u.tokio_mode(), tokio_postgres::config::SslMode::Require);
        // Every mode builds a configuration with the web PKI roots alone.
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            DbUrl::parse(&format!("postgres://h/db?sslmode={mode}"))
                .unwrap()
                .tls_config(&ConnectOptions::default())
                .unwrap();
        }
    }

    #[test]
    fn bad_values_are_clear_and_never_quote_the_password() {
        let err = DbUrl::parse("postgres://u:hunter2@h/db?sslmode=verify_full")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("verify_full") && err.contains("verify-full"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        let err = DbUrl::parse("postgres://u:hunter2@h/db?sslrootcert=/nonexistent/ca.pem")
            .unwrap()
            .tls_config(&ConnectOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && !err.contains("hunter2"),
            "{err}"
        );

        let err = DbUrl::parse("postgres://u:hunter2@h/db?sslmode=require&sslrootcert=system")
            .unwrap()
            .tls_config(&ConnectOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");

        let err = DbUrl::parse("postgres://h/db")
            .unwrap()
            .tls_config(&ConnectOptions {
                ca_pem: Some("not a certificate".into()),
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("database_ca_pem"), "{err}");

        let err = DbUrl::parse("postgres://u:hunter2@h/db?pgbouncer=maybe")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pgbouncer") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(DbUrl::parse("host='h' password='x y'").is_err());

        // `disable` reads no CA (as libpq).
        DbUrl::parse("postgres://h/db?sslmode=disable&sslrootcert=/nonexistent/ca.pem")
            .unwrap()
            .tls_config(&ConnectOptions::default())
            .unwrap();
    }
}
