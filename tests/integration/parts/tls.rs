//! The store's TLS to Postgres as the clouds serve it: a server whose certificate (for `localhost`
//! only) is signed by a CA of its own, as RDS's and Supabase's are, reached with each of libpq's
//! `sslmode`s, the CA given by `sslrootcert=<file>` or by PEM (the secret's `database_ca_pem`).

use std::path::PathBuf;

use crmsync_store::{ConnectOptions, Store};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::sync::OnceCell;

/// A password in every URL: no error may show it.
const PASSWORD: &str = "pw-never-shown-9431";

struct TlsPostgres {
    port: u16,
    ca_pem: String,
    ca_file: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca_file: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

static SERVER: OnceCell<TlsPostgres> = OnceCell::const_new();

async fn server() -> &'static TlsPostgres {
    SERVER
        .get_or_init(|| async {
            let ca = new_ca("crmsync test database CA");
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            let cert = params.signed_by(&key, &ca).unwrap();
            let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
            let pg = tokio::task::spawn_blocking(move || {
                crmsync_testkit::start_tls_postgres(&cert_pem, &key_pem)
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
            let dir = std::env::temp_dir().join(format!("crmsync-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca_file = dir.join("ca.pem");
            std::fs::write(&ca_file, ca.pem()).unwrap();
            let other_ca_file = dir.join("other-ca.pem");
            std::fs::write(&other_ca_file, new_ca("some other CA").pem()).unwrap();
            TlsPostgres {
                port: pg.port,
                ca_pem: ca.pem(),
                ca_file,
                other_ca_file,
            }
        })
        .await
}

impl TlsPostgres {
    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{params}",
            self.port
        )
    }
}

/// Whether the connection is encrypted, or the error as the functions would log it.
async fn tls_of(url: &str, options: &ConnectOptions) -> Result<bool, String> {
    let result = match Store::connect_with(url, 1, options) {
        Ok(store) => store.uses_tls().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &result {
        assert!(!e.contains(PASSWORD), "the password leaked: {e}");
    }
    result
}

fn none() -> ConnectOptions {
    ConnectOptions::default()
}

#[tokio::test]
async fn verify_full_connects_with_the_servers_ca_and_name() {
    let pg = server().await;
    let ca = format!("sslrootcert={}", pg.ca_file.display());
    assert_eq!(
        tls_of(
            &pg.url("localhost", &format!("sslmode=verify-full&{ca}")),
            &none()
        )
        .await,
        Ok(true)
    );
    // The CA from the secret (PEM), and no sslmode: verify-full all the same.
    let from_secret = ConnectOptions {
        ca_pem: Some(pg.ca_pem.clone()),
    };
    assert_eq!(
        tls_of(&pg.url("localhost", "application_name=t"), &from_secret).await,
        Ok(true)
    );
    assert_eq!(
        tls_of(&pg.url("localhost", "sslmode=verify-full"), &from_secret).await,
        Ok(true)
    );
}

#[tokio::test]
async fn verify_full_refuses_a_name_the_certificate_lacks_where_verify_ca_connects() {
    let pg = server().await;
    let ca = format!("sslrootcert={}", pg.ca_file.display());
    // The certificate names `localhost` only, not the address 127.0.0.1.
    let err = tls_of(
        &pg.url("127.0.0.1", &format!("sslmode=verify-full&{ca}")),
        &none(),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("not valid for the host `127.0.0.1`") && err.contains("verify-ca"),
        "{err}"
    );
    assert_eq!(
        tls_of(
            &pg.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}")),
            &none()
        )
        .await,
        Ok(true)
    );
    // libpq: `require` with a root certificate checks the chain, not the name.
    assert_eq!(
        tls_of(
            &pg.url("127.0.0.1", &format!("sslmode=require&{ca}")),
            &none()
        )
        .await,
        Ok(true)
    );
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_certificate_is_refused() {
    let pg = server().await;
    let other = format!("sslrootcert={}", pg.other_ca_file.display());
    for mode in ["verify-ca", "verify-full", "require"] {
        let err = tls_of(
            &pg.url("localhost", &format!("sslmode={mode}&{other}")),
            &none(),
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("not signed by a CA of the sslrootcert file")
                && err.contains("database_ca_pem"),
            "{mode}: {err}"
        );
    }
    // Without any CA, verify-full (the default) checks against the web PKI roots, which did not
    // sign it either: the message says how to give the database's CA.
    let err = tls_of(&pg.url("localhost", ""), &none()).await.unwrap_err();
    assert!(
        err.contains("web PKI") && err.contains("sslrootcert"),
        "{err}"
    );
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_and_disable_does_not_encrypt() {
    let pg = server().await;
    for mode in ["require", "prefer", "allow"] {
        assert_eq!(
            tls_of(&pg.url("127.0.0.1", &format!("sslmode={mode}")), &none()).await,
            Ok(true),
            "{mode}"
        );
    }
    assert_eq!(
        tls_of(&pg.url("localhost", "sslmode=disable"), &none()).await,
        Ok(false)
    );
}

#[tokio::test]
async fn a_server_without_tls_is_refused_unless_disabled_or_preferred() {
    // The test cluster serves no TLS.
    let pg = crmsync_testkit::postgres().await;
    let url = |params: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?{params}",
            pg.port()
        )
    };
    let err = tls_of(&url(""), &none()).await.unwrap_err();
    assert!(err.to_lowercase().contains("tls"), "{err}");
    assert_eq!(tls_of(&url("sslmode=prefer"), &none()).await, Ok(false));
    assert_eq!(tls_of(&url("sslmode=disable"), &none()).await, Ok(false));
}
