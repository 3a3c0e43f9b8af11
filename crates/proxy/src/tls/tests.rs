//! Certificates are made per test with rcgen in a temp dir; handshakes run in-process over
//! `tokio::io::duplex`, with rustls on both ends.

use super::*;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_rustls::{TlsConnector, client};

type Ymd = (i32, u8, u8);

/// A temp dir with one CA in it; leaves are signed by that CA unless a test brings another.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, not yet on disk.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn sign(issuer: &Issuer<'_, KeyPair>, cn: &str, eku: ExtendedKeyUsagePurpose, window: Option<(Ymd, Ymd)>) -> Leaf {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    if let Some(((by, bm, bd), (ay, am, ad))) = window {
        params.not_before = date_time_ymd(by, bm, bd);
        params.not_after = date_time_ymd(ay, am, ad);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Leaf { cert, key }
}

impl Pki {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), ca: new_ca("test CA") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_leaf(&self, cn: &str) -> Leaf {
        sign(&self.ca, cn, ExtendedKeyUsagePurpose::ServerAuth, None)
    }

    fn client_leaf(&self, cn: &str) -> Leaf {
        sign(&self.ca, cn, ExtendedKeyUsagePurpose::ClientAuth, None)
    }

    /// Writes `name.crt` and `name.key`; returns their paths.
    fn write(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")));
        fs::write(&cert, leaf.cert.pem()).unwrap();
        fs::write(&key, leaf.key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn write_ca(&self, name: &str, ca: &CertifiedIssuer<'static, KeyPair>) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, ca.pem()).unwrap();
        path
    }

    /// A valid server identity `server.crt`/`server.key`, no client auth.
    fn server_files(&self) -> TlsFiles {
        let (cert, key) = self.write("server", &self.server_leaf("server"));
        TlsFiles { cert, key, client_ca: None }
    }
}

/// A client that trusts `ca` and offers only `versions`, without a client certificate.
fn client_trusting(
    ca: &CertifiedIssuer<'static, KeyPair>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Handshake = (std::io::Result<ServerStream<DuplexStream>>, std::io::Result<client::TlsStream<DuplexStream>>);

/// Runs both ends of a handshake to `localhost` at once and returns both outcomes.
async fn handshake(acceptor: &ReloadableAcceptor, client: Arc<ClientConfig>) -> Handshake {
    let (client_io, server_io) = duplex(64 * 1024);
    let connector = TlsConnector::from(client);
    let name = server_name("localhost").unwrap();
    tokio::join!(accept(server_io, acceptor.config()), connector.connect(name, client_io))
}

/// Sends a line each way over an established session.
async fn round_trip(server: &mut ServerStream<DuplexStream>, client: &mut client::TlsStream<DuplexStream>) {
    client.write_all(b"PING\r\n").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 6];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"PING\r\n");
    server.write_all(b"+PONG\r\n").await.unwrap();
    server.flush().await.unwrap();
    let mut buf = [0u8; 7];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
}

/// The DER of the certificate the server presented to `client`.
fn presented(client: &client::TlsStream<DuplexStream>) -> Vec<u8> {
    client.get_ref().1.peer_certificates().expect("server always presents a certificate")[0].to_vec()
}

// --- Loading and validating files. ---

#[test]
fn valid_pair_builds_a_server_config() {
    let pki = Pki::new();
    let files = pki.server_files();
    server_config(&files).unwrap();
    let (not_after, secs) = leaf_expiry(&files).unwrap();
    // rcgen's default validity runs to 4096-01-01.
    assert_eq!(
        not_after,
        UNIX_EPOCH + Duration::from_secs(u64::try_from(days_from_civil(4096, 1, 1) * 86_400).unwrap())
    );
    assert!(secs > 60 * 365 * 86_400, "{secs}");
}

#[test]
fn missing_files_are_named_in_the_error() {
    let pki = Pki::new();
    let files = pki.server_files();

    let no_cert = TlsFiles { cert: pki.path("nope.crt"), ..files.clone() };
    let err = server_config(&no_cert).unwrap_err();
    assert!(matches!(err, TlsError::Read { ref path, .. } if *path == no_cert.cert), "{err:?}");
    assert!(err.to_string().contains("nope.crt"), "{err}");

    let no_key = TlsFiles { key: pki.path("nope.key"), ..files.clone() };
    let err = server_config(&no_key).unwrap_err();
    assert!(err.to_string().contains("nope.key"), "{err}");

    let no_ca = TlsFiles { client_ca: Some(pki.path("nope-ca.crt")), ..files };
    let err = server_config(&no_ca).unwrap_err();
    assert!(err.to_string().contains("nope-ca.crt"), "{err}");
}

#[test]
fn key_of_another_certificate_is_a_key_mismatch() {
    let pki = Pki::new();
    let (cert, _) = pki.write("server", &pki.server_leaf("server"));
    let (_, other_key) = pki.write("other", &pki.server_leaf("other"));
    let err = server_config(&TlsFiles { cert: cert.clone(), key: other_key.clone(), client_ca: None }).unwrap_err();
    assert!(
        matches!(err, TlsError::KeyMismatch { cert: ref c, key: ref k } if *c == cert && *k == other_key),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("server.crt") && msg.contains("other.key"), "{msg}");
}

#[test]
fn expired_leaf_is_refused_with_its_end_date() {
    let pki = Pki::new();
    let leaf = sign(&pki.ca, "old", ExtendedKeyUsagePurpose::ServerAuth, Some(((2019, 1, 1), (2020, 1, 1))));
    let (cert, key) = pki.write("old", &leaf);
    let files = TlsFiles { cert, key, client_ca: None };
    let err = server_config(&files).unwrap_err();
    assert!(
        matches!(err, TlsError::Expired { ref not_after, .. } if not_after == "2020-01-01 00:00:00 UTC"),
        "{err:?}"
    );
    assert!(err.to_string().contains("old.crt") && err.to_string().contains("expired"), "{err}");
    assert!(ReloadableAcceptor::new(files.clone()).is_err());

    // The metric still reports how long ago it expired.
    let (_, secs) = leaf_expiry(&files).unwrap();
    assert!(secs < 0, "{secs}");
}

#[test]
fn leaf_not_yet_valid_is_refused() {
    let pki = Pki::new();
    let leaf = sign(&pki.ca, "future", ExtendedKeyUsagePurpose::ServerAuth, Some(((2090, 6, 1), (2091, 1, 1))));
    let (cert, key) = pki.write("future", &leaf);
    let err = server_config(&TlsFiles { cert, key, client_ca: None }).unwrap_err();
    assert!(
        matches!(err, TlsError::NotYetValid { ref not_before, .. } if not_before == "2090-06-01 00:00:00 UTC"),
        "{err:?}"
    );
    assert!(err.to_string().contains("future.crt"), "{err}");
}

#[test]
fn files_without_the_expected_pem_section_are_refused() {
    let pki = Pki::new();
    let files = pki.server_files();

    // A key where the certificate should be.
    let swapped = TlsFiles { cert: files.key.clone(), key: files.cert.clone(), client_ca: None };
    let err = server_config(&swapped).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { ref path } if *path == files.key), "{err:?}");

    let cert_as_key = TlsFiles { key: files.cert.clone(), ..files.clone() };
    let err = server_config(&cert_as_key).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { ref path } if *path == files.cert), "{err:?}");

    let garbage = pki.path("garbage.crt");
    fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n").unwrap();
    let err = server_config(&TlsFiles { cert: garbage.clone(), ..files.clone() }).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { ref path, .. } if *path == garbage), "{err:?}");

    // Valid base64, but not a certificate inside.
    let not_x509 = pki.path("not-x509.crt");
    fs::write(&not_x509, "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n").unwrap();
    let err = server_config(&TlsFiles { cert: not_x509.clone(), ..files }).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { ref path, .. } if *path == not_x509), "{err:?}");
}

#[test]
fn mtls_server_config_builds_with_a_client_ca() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let files = TlsFiles { client_ca: Some(ca), ..pki.server_files() };
    server_config(&files).unwrap();
}

// --- Handshakes. ---

#[tokio::test]
async fn handshake_completes_over_tls12_and_tls13() {
    let pki = Pki::new();
    let acceptor = ReloadableAcceptor::new(pki.server_files()).unwrap();
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (server, client) = handshake(&acceptor, client_trusting(&pki.ca, &[version])).await;
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        assert_eq!(client.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(server.connection().protocol_version(), Some(expected));
        round_trip(&mut server, &mut client).await;
    }
}

#[tokio::test]
async fn mtls_accepts_a_client_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let acceptor = ReloadableAcceptor::new(TlsFiles { client_ca: Some(ca.clone()), ..pki.server_files() }).unwrap();
    let (cert, key) = pki.write("client", &pki.client_leaf("client"));
    let client = client_config(&ca, Some(&cert), Some(&key)).unwrap();

    let (server, client) = handshake(&acceptor, client).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    assert!(server.connection().peer_certificates().is_some_and(|certs| !certs.is_empty()));
    round_trip(&mut server, &mut client).await;
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let acceptor = ReloadableAcceptor::new(TlsFiles { client_ca: Some(ca.clone()), ..pki.server_files() }).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (server, _client) = handshake(&acceptor, client_trusting(&pki.ca, &[version])).await;
        assert!(server.is_err(), "{version:?}: server accepted a client without a certificate");
    }
}

#[tokio::test]
async fn mtls_refuses_a_client_certificate_from_another_ca() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let acceptor = ReloadableAcceptor::new(TlsFiles { client_ca: Some(ca.clone()), ..pki.server_files() }).unwrap();
    let rogue_ca = new_ca("rogue CA");
    let rogue = sign(&rogue_ca, "rogue", ExtendedKeyUsagePurpose::ClientAuth, None);
    let (cert, key) = pki.write("rogue", &rogue);
    // The rogue client trusts the real CA for the server, so only its own certificate is wrong.
    let client = client_config(&ca, Some(&cert), Some(&key)).unwrap();

    let (server, client) = handshake(&acceptor, client).await;
    assert!(server.is_err(), "server accepted a certificate from another CA");
    // Under TLS 1.3 the client finishes before the server judges its certificate; it learns of
    // the refusal on its first read.
    if let Ok(mut client) = client {
        let mut buf = [0u8; 1];
        assert!(!matches!(client.read(&mut buf).await, Ok(1)));
    }
}

#[tokio::test]
async fn client_refuses_a_server_signed_by_another_ca() {
    let pki = Pki::new();
    let acceptor = ReloadableAcceptor::new(pki.server_files()).unwrap();
    let other_ca = pki.write_ca("other-ca.crt", &new_ca("other CA"));
    let client = client_config(&other_ca, None, None).unwrap();
    let (_server, client) = handshake(&acceptor, client).await;
    assert!(client.is_err(), "client trusted a server certificate from another CA");
}

#[test]
fn client_config_needs_both_halves_of_a_client_identity() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let (cert, key) = pki.write("client", &pki.client_leaf("client"));
    let (_, other_key) = pki.write("other", &pki.client_leaf("other"));

    client_config(&ca, None, None).unwrap();
    client_config(&ca, Some(&cert), Some(&key)).unwrap();
    let err = client_config(&ca, Some(&cert), None).unwrap_err();
    assert!(matches!(err, TlsError::Incomplete { ref path, .. } if *path == cert), "{err:?}");
    let err = client_config(&ca, None, Some(&key)).unwrap_err();
    assert!(matches!(err, TlsError::Incomplete { ref path, .. } if *path == key), "{err:?}");
    let err = client_config(&ca, Some(&cert), Some(&other_key)).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let err = client_config(&pki.path("missing-ca.crt"), None, None).unwrap_err();
    assert!(err.to_string().contains("missing-ca.crt"), "{err}");
}

#[test]
fn expired_client_identity_is_refused() {
    let pki = Pki::new();
    let ca = pki.write_ca("ca.crt", &pki.ca);
    let old = sign(&pki.ca, "old-client", ExtendedKeyUsagePurpose::ClientAuth, Some(((2019, 1, 1), (2020, 1, 1))));
    let (cert, key) = pki.write("old-client", &old);
    let err = client_config(&ca, Some(&cert), Some(&key)).unwrap_err();
    assert!(matches!(err, TlsError::Expired { ref path, .. } if *path == cert), "{err:?}");
}

// --- Reload. ---

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_handshakes_only() {
    let pki = Pki::new();
    let first = pki.server_leaf("first");
    let (cert, key) = pki.write("server", &first);
    let acceptor = ReloadableAcceptor::new(TlsFiles { cert, key, client_ca: None }).unwrap();
    let client = client_trusting(&pki.ca, &[&rustls::version::TLS13]);

    let (old_server, old_client) = handshake(&acceptor, client.clone()).await;
    let (mut old_server, mut old_client) = (old_server.unwrap(), old_client.unwrap());
    assert_eq!(presented(&old_client), first.cert.der().to_vec());
    let old_expiry = acceptor.expiry();

    let second = sign(&pki.ca, "second", ExtendedKeyUsagePurpose::ServerAuth, Some(((2020, 1, 1), (2080, 1, 1))));
    pki.write("server", &second);
    acceptor.reload().unwrap();
    assert!(acceptor.expiry() < old_expiry, "expiry follows the reloaded certificate");

    let (new_server, new_client) = handshake(&acceptor, client).await;
    let (mut new_server, mut new_client) = (new_server.unwrap(), new_client.unwrap());
    assert_eq!(presented(&new_client), second.cert.der().to_vec());
    round_trip(&mut new_server, &mut new_client).await;

    // The session made before the reload goes on, with the certificate it started with.
    round_trip(&mut old_server, &mut old_client).await;
    assert_eq!(presented(&old_client), first.cert.der().to_vec());
}

#[tokio::test]
async fn failed_reload_keeps_serving_the_old_certificate() {
    let pki = Pki::new();
    let leaf = pki.server_leaf("kept");
    let (cert, key) = pki.write("server", &leaf);
    let acceptor = ReloadableAcceptor::new(TlsFiles { cert: cert.clone(), key, client_ca: None }).unwrap();
    let expiry = acceptor.expiry();

    fs::write(&cert, "not a certificate").unwrap();
    let err = acceptor.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    // A valid certificate whose key was not replaced with it is refused as well.
    let other = pki.server_leaf("other");
    fs::write(&cert, other.cert.pem()).unwrap();
    assert!(matches!(acceptor.reload(), Err(TlsError::KeyMismatch { .. })));

    assert_eq!(acceptor.expiry(), expiry);
    let (server, client) = handshake(&acceptor, client_trusting(&pki.ca, &[&rustls::version::TLS13])).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    assert_eq!(presented(&client), leaf.cert.der().to_vec());
    round_trip(&mut server, &mut client).await;
}

// --- Names and the validity reader. ---

#[test]
fn server_name_accepts_dns_names_and_ip_addresses() {
    assert!(matches!(server_name("redis-1.internal").unwrap(), ServerName::DnsName(_)));
    assert!(matches!(server_name("10.0.1.10").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("bad name!"), Err(TlsError::BadServerName(ref h)) if h == "bad name!"));
    assert!(server_name("").is_err());
}

#[test]
fn validity_is_read_from_utc_and_generalized_times() {
    let ca = new_ca("dates CA");
    // Before 2050 RFC 5280 requires UTCTime, from 2050 on GeneralizedTime.
    let leaf = sign(&ca, "dates", ExtendedKeyUsagePurpose::ServerAuth, Some(((1999, 12, 31), (2050, 2, 28))));
    let validity = Validity::from_der(leaf.cert.der()).unwrap();
    assert_eq!(validity.not_before.to_string(), "1999-12-31 00:00:00 UTC");
    assert_eq!(validity.not_before.unix, 946_598_400);
    assert_eq!(validity.not_after.to_string(), "2050-02-28 00:00:00 UTC");
    assert_eq!(validity.not_after.unix, 2_529_619_200);
    assert!(validity.check(Path::new("x"), 946_598_399).is_err());
    assert!(validity.check(Path::new("x"), 946_598_400).is_ok());
    assert!(validity.check(Path::new("x"), 2_529_619_200).is_ok());
    assert!(validity.check(Path::new("x"), 2_529_619_201).is_err());
}

#[test]
fn time_fields_parse_exactly_as_rfc5280_writes_them() {
    let t = CertTime::parse(TAG_UTC_TIME, b"491231235959Z").unwrap();
    assert_eq!((t.year, t.unix), (2049, 2_524_607_999));
    assert_eq!(CertTime::parse(TAG_UTC_TIME, b"700101000000Z").unwrap().unix, 0);
    assert_eq!(CertTime::parse(TAG_GENERALIZED_TIME, b"19691231235959Z").unwrap().unix, -1);
    assert_eq!(CertTime::parse(TAG_GENERALIZED_TIME, b"20240229120000Z").unwrap().unix, 1_709_208_000);
    for bad in [&b"4912312359Z"[..], b"491231235959", b"491331235959Z", b"49123123595aZ", b"20240229120000Z"] {
        assert!(CertTime::parse(TAG_UTC_TIME, bad).is_none(), "{}", String::from_utf8_lossy(bad));
    }
    assert!(CertTime::parse(0x04, b"20240229120000Z").is_none());
}

#[test]
fn truncated_der_is_not_a_certificate() {
    let ca = new_ca("der CA");
    let der = ca.der().to_vec();
    assert!(Validity::from_der(&der).is_some());
    for len in [0, 1, 2, 4, 10, 100] {
        assert!(Validity::from_der(&der[..len]).is_none(), "{len}");
    }
    assert!(der_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none(), "5-byte length");
    assert!(der_tlv(&[0x30, 0x80]).is_none(), "indefinite length is BER, not DER");
}

mod client_stream;
mod streams;
