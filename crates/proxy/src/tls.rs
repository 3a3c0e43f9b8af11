//! TLS for both sides of the proxy: the downstream listener's server config (optionally mutual
//! TLS), its reload on SIGHUP, and the upstream client config for TLS to the Redis nodes.
//!
//! Everything runs on rustls with the *ring* provider, passed explicitly to every builder, so no
//! process-wide default provider has to be installed. Certificates and keys are read from PEM
//! files; every error names the file it is about, so `--check` can print it as is.
//!
//! Loading a server config also checks what rustls would only find out at handshake time, or
//! never: that the key belongs to the certificate, and that the leaf certificate is valid now.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The protocol versions offered on both sides: TLS 1.2 for older clients, TLS 1.3 preferred.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Files that make up the downstream (client-facing) TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates; `Some` = every client must present a certificate
    /// signed by one of these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl From<&crate::config::TlsConfig> for TlsFiles {
    fn from(config: &crate::config::TlsConfig) -> Self {
        Self { cert: config.cert.clone(), key: config.key.clone(), client_ca: config.client_ca.clone() }
    }
}

/// Why a TLS configuration could not be built.
///
/// Every variant about a file carries its path, and its message names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    // --- The files named in the config are missing or do not hold what they should. ---
    /// A file could not be read (missing, permissions, ...).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A certificate file holds no `CERTIFICATE` PEM section.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no `PRIVATE KEY` (PKCS#8, RSA or EC) PEM section.
    #[error("{}: no PEM private key found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM, or a section in it is not a valid certificate or key.
    #[error("{}: bad PEM: {detail}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A file names more than one thing where one was expected, or one half of a pair is missing
    /// (a client certificate without its key, or the reverse).
    #[error("{}: {detail}", path.display())]
    Incomplete {
        /// The file that was given.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },

    // --- The files parse, but do not make a usable identity. ---
    /// The private key does not belong to the (leaf) certificate.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate's validity ended.
    #[error("certificate {} expired at {not_after}", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// End of validity, `YYYY-MM-DD HH:MM:SS UTC`.
        not_after: String,
    },
    /// The leaf certificate's validity has not started yet (or the clock is wrong).
    #[error("certificate {} is not valid before {not_before}", path.display())]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Start of validity, `YYYY-MM-DD HH:MM:SS UTC`.
        not_before: String,
    },

    // --- rustls or the caller refused. ---
    /// rustls rejected the material; the message says which file or setting.
    #[error("{0}")]
    Rustls(String),
    /// A host name that is neither a valid DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    BadServerName(String),
}

/// Builds the downstream listener's rustls config: TLS 1.2 and 1.3, the chain and key from PEM,
/// and with `client_ca` set, client certificates required and verified against it.
///
/// # Errors
/// A file is missing or does not parse, the key does not match the leaf certificate, the leaf is
/// expired or not yet valid, or rustls refuses the material ([`TlsError`] names the file).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    load_server(files).map(|loaded| loaded.config)
}

/// When the leaf certificate in `files.cert` expires, and the seconds from now until then
/// (negative once expired) — for the `tls_cert_expiry_seconds` gauge.
///
/// # Errors
/// The certificate file cannot be read or parsed.
pub fn leaf_expiry(files: &TlsFiles) -> Result<(SystemTime, i64), TlsError> {
    let chain = read_certs(&files.cert)?;
    let validity = leaf_validity(&files.cert, &chain)?;
    Ok((validity.not_after.system_time(), validity.not_after.unix - unix_now()))
}

/// The upstream side's rustls config: trust the CAs in `ca`, and with `client_cert` and
/// `client_key`, present that identity to the nodes (mutual TLS).
///
/// Pass it to [`connect`] with [`server_name`] of the node's host.
///
/// # Errors
/// A file is missing or does not parse, only one of `client_cert`/`client_key` is given, the
/// key does not match the certificate, or the client certificate is expired or not yet valid.
pub fn client_config(
    ca: &Path,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = read_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(format!("upstream TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (client_cert, client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            // Nodes would refuse an expired identity at every connect; say so once, up front.
            leaf_validity(cert, &chain)?.check(cert, unix_now())?;
            let certified = certified_key(cert, chain, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        (Some(cert), None) => {
            return Err(TlsError::Incomplete {
                path: cert.to_owned(),
                detail: "client certificate without a key".into(),
            });
        }
        (None, Some(key)) => {
            return Err(TlsError::Incomplete {
                path: key.to_owned(),
                detail: "client key without a certificate".into(),
            });
        }
    };
    Ok(Arc::new(config))
}

/// The name to verify a node's certificate against: an IP address (also `[v6]`) becomes an
/// IP-address name, anything else must be a valid DNS name.
///
/// # Errors
/// [`TlsError::BadServerName`] when `host` is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    // IP first: a dotted quad is also a syntactically valid DNS name, and certificates for
    // nodes addressed by IP carry it as an IP SAN, not a DNS SAN.
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::BadServerName(host.to_owned()))
}

/// A TLS acceptor whose certificate can be replaced while the listener runs (SIGHUP).
///
/// Each accepted connection takes the config current at its handshake and keeps it: a reload
/// changes what new handshakes see, never an established session.
pub struct ReloadableAcceptor {
    files: TlsFiles,
    current: ArcSwap<Loaded>,
}

impl fmt::Debug for ReloadableAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableAcceptor").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadableAcceptor {
    /// Loads `files` once; they are read again on every [`reload`](Self::reload).
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = load_server(&files)?;
        Ok(Self { files, current: ArcSwap::from_pointee(loaded) })
    }

    /// The config current now, for one accepted connection's handshake ([`accept`]).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Re-reads the files and, when they are valid, makes them current for new handshakes.
    ///
    /// # Errors
    /// As [`server_config`]; the previous config then stays current.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_server(&self.files)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// Seconds until the current leaf certificate expires (negative once expired).
    pub fn expiry(&self) -> i64 {
        self.current.load().not_after.unix - unix_now()
    }

    /// The files this acceptor loads from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A server config together with its leaf's end of validity.
struct Loaded {
    config: Arc<ServerConfig>,
    not_after: CertTime,
}

fn load_server(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = provider();
    let chain = read_certs(&files.cert)?;
    let validity = leaf_validity(&files.cert, &chain)?;
    validity.check(&files.cert, unix_now())?;
    let certified = certified_key(&files.cert, chain, &files.key, &provider)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(format!("server TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(read_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Rustls(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(Loaded { config: Arc::new(config), not_after: validity.not_after })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn bad_pem(path: &Path, err: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::BadPem { path: path.to_owned(), detail: err.to_string() }
}

/// All certificates in a PEM file, in file order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey { path: path.to_owned() }),
        Err(e) => Err(bad_pem(path, e)),
    }
}

/// A root store holding every certificate of a CA bundle.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadPem { path: path.to_owned(), detail: e.to_string() })?;
    }
    Ok(roots)
}

/// Pairs a chain with the key in `key_path`, refusing a key that belongs to another certificate.
fn certified_key(
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let key = read_key(key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadPem { path: key_path.to_owned(), detail: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public half; rustls accepts it then too, and a
        // wrong key still fails every handshake loudly.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() })
        }
        Err(e) => Err(TlsError::BadPem { path: cert_path.to_owned(), detail: e.to_string() }),
    }
}

fn leaf_validity(path: &Path, chain: &[CertificateDer<'_>]) -> Result<Validity, TlsError> {
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate { path: path.to_owned() })?;
    Validity::from_der(leaf).ok_or_else(|| TlsError::BadPem {
        path: path.to_owned(),
        detail: "not an X.509 certificate (cannot read its validity)".into(),
    })
}

fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// A certificate's validity window, read straight from its DER.
///
/// Hand-rolled instead of a full X.509 parser: only the `validity` field is needed, its position
/// in `TBSCertificate` is fixed by RFC 5280, and rustls has already checked the rest is sane by the
/// time a handshake uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    not_before: CertTime,
    not_after: CertTime,
}

/// A point in time from a certificate, in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CertTime {
    /// Seconds since the Unix epoch (negative before 1970).
    unix: i64,
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl fmt::Display for CertTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl CertTime {
    fn system_time(&self) -> SystemTime {
        let secs = Duration::from_secs(self.unix.unsigned_abs());
        if self.unix >= 0 { UNIX_EPOCH + secs } else { UNIX_EPOCH - secs }
    }

    /// Parses a DER `Time` body: UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`,
    /// the only forms RFC 5280 allows in certificates.
    fn parse(tag: u8, body: &[u8]) -> Option<Self> {
        let digits = body.strip_suffix(b"Z")?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |s: &[u8]| s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        let (year, rest) = match (tag, digits.len()) {
            // RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
            (TAG_UTC_TIME, 12) => {
                let yy = num(&digits[..2]);
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
            }
            (TAG_GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
            _ => return None,
        };
        let field = |i: usize| u8::try_from(num(&rest[i..i + 2])).ok();
        let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let unix = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
        Some(Self { unix, year, month, day, hour, minute, second })
    }
}

const TAG_INTEGER: u8 = 0x02;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0;

impl Validity {
    /// Reads `tbsCertificate.validity` from a DER certificate; `None` if the DER is not shaped
    /// like an X.509 certificate.
    fn from_der(der: &[u8]) -> Option<Self> {
        let (tag, cert, _) = der_tlv(der)?;
        if tag != TAG_SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = der_tlv(cert)?;
        if tag != TAG_SEQUENCE {
            return None;
        }
        // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
        //                               validity, ... }
        let (mut tag, _, mut rest) = der_tlv(tbs)?;
        if tag == TAG_VERSION {
            (tag, _, rest) = der_tlv(rest)?;
        }
        if tag != TAG_INTEGER {
            return None;
        }
        for _ in 0..2 {
            let (tag, _, next) = der_tlv(rest)?;
            if tag != TAG_SEQUENCE {
                return None;
            }
            rest = next;
        }
        let (tag, validity, _) = der_tlv(rest)?;
        if tag != TAG_SEQUENCE {
            return None;
        }
        let (tag, body, rest) = der_tlv(validity)?;
        let not_before = CertTime::parse(tag, body)?;
        let (tag, body, _) = der_tlv(rest)?;
        let not_after = CertTime::parse(tag, body)?;
        Some(Self { not_before, not_after })
    }

    /// Whether the window contains `now` (Unix seconds).
    fn check(&self, path: &Path, now: i64) -> Result<(), TlsError> {
        if now > self.not_after.unix {
            return Err(TlsError::Expired { path: path.to_owned(), not_after: self.not_after.to_string() });
        }
        if now < self.not_before.unix {
            return Err(TlsError::NotYetValid { path: path.to_owned(), not_before: self.not_before.to_string() });
        }
        Ok(())
    }
}

/// Splits one DER element off `input`: `(tag, contents, rest)`. Single-byte tags only, which is
/// all the certificate fields before `validity` use.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (len_bytes, input) = input.split_at(n);
        (len_bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b)), input)
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

mod stream;
#[cfg(test)]
mod tests;

pub use stream::{ClientStream, ServerStream, Side, TlsStream, accept, connect};

/// The ACL user name a client certificate gives (`tls.client_user`): the subject's common name,
/// or its first DNS, e-mail or URI subject alternative name. `None` when the field is off, absent
/// or not text. Only called on a certificate rustls verified against `client_ca`.
pub fn certificate_user(der: &[u8], field: crate::config::CertificateUser) -> Option<String> {
    use crate::config::CertificateUser;
    use x509_parser::extensions::GeneralName;
    if field == CertificateUser::Off {
        return None;
    }
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match field {
        CertificateUser::Off => None,
        CertificateUser::Cn => certificate.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned),
        CertificateUser::San => {
            certificate.subject_alternative_name().ok()??.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
                    Some((*text).to_owned())
                }
                _ => None,
            })
        }
    };
    name.filter(|n| !n.is_empty())
}
