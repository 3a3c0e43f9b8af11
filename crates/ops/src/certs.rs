//! `certs generate`: a private CA and the server and client identities it signs, for development
//! and for mutual TLS between clients, the proxy and the Redis nodes.
//!
//! The server certificate carries both the serverAuth and clientAuth purposes, so one identity
//! serves the proxy's listener and a Redis node's `tls-port`, replication and cluster bus (where
//! each node is also the client of its peers). Keys are ECDSA P-256, written 0600.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Hosts the server certificate is for when `--hosts` is not given.
pub const DEFAULT_HOSTS: &str = "localhost,127.0.0.1,::1";
/// How long the CA is valid; leaf certificates may not outlive it.
pub const CA_DAYS: u32 = 3650;
/// Common name of the client certificate.
pub const CLIENT_CN: &str = "redisforge-client";

/// Backdating of `not_before`, so a peer whose clock is slightly behind accepts fresh certificates.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// `redisforge-ops certs generate DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Directory to write ca.crt, ca.key, server.crt, server.key, client.crt and client.key into
    /// (created if missing).
    pub dir: PathBuf,
    /// Names and addresses the server certificate is valid for (subject alternative names),
    /// comma-separated; DNS names or IP addresses.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_HOSTS)]
    pub hosts: Vec<String>,
    /// Validity of the server and client certificates, in days (the CA gets 10 years).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Overwrite existing files instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// Why certificates could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    // --- The user's request. ---
    /// Files of a previous run would be overwritten and `--force` was not given.
    #[error("refusing to overwrite {} (pass --force to replace them)", list(paths))]
    Exists {
        /// Every target file that already exists.
        paths: Vec<PathBuf>,
    },
    /// `--hosts` was empty.
    #[error("--hosts names no host")]
    NoHosts,
    /// A `--hosts` entry that is neither an IP address nor a valid DNS name.
    #[error("--hosts entry {0:?} is neither an IP address nor a valid DNS name")]
    BadHost(String),
    /// `--days` outside 1..=[`CA_DAYS`].
    #[error("--days must be between 1 and {CA_DAYS} (the CA's validity), got {0}")]
    BadDays(u32),

    // --- The machine. ---
    /// A directory or file could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// rcgen failed to make a key or certificate.
    #[error("cannot generate the {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// What rcgen said.
        source: rcgen::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// One file written by [`generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where.
    pub path: PathBuf,
    /// What it holds, for the summary.
    pub what: &'static str,
    /// End of validity, for certificates.
    pub not_after: Option<OffsetDateTime>,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrote {}  {}", self.path.display(), self.what)?;
        if let Some(not_after) = self.not_after {
            write!(f, ", valid until {}", not_after.date())?;
        }
        Ok(())
    }
}

/// Runs `certs generate` and prints what it wrote.
///
/// # Errors
/// As [`generate`].
pub fn run(args: &GenerateArgs) -> Result<(), CertsError> {
    for written in generate(args)? {
        println!("{written}");
    }
    println!(
        "server.crt is for {}; it also works as a client certificate for Redis replication and the cluster bus",
        args.hosts.join(", ")
    );
    Ok(())
}

/// A key and certificate in PEM, ready to be written.
struct Pair {
    name: &'static str,
    what: &'static str,
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
}

/// Generates the CA, server and client identities and writes them into `args.dir`.
///
/// Nothing is written when any target file exists (without `--force`) or any input is invalid.
///
/// # Errors
/// See [`CertsError`].
pub fn generate(args: &GenerateArgs) -> Result<Vec<Written>, CertsError> {
    if args.days == 0 || args.days > CA_DAYS {
        return Err(CertsError::BadDays(args.days));
    }
    let sans = args.hosts.iter().map(|h| san(h)).collect::<Result<Vec<_>, _>>()?;
    if sans.is_empty() {
        return Err(CertsError::NoHosts);
    }

    let names = ["ca", "server", "client"];
    let targets: Vec<PathBuf> =
        names.iter().flat_map(|n| [args.dir.join(format!("{n}.crt")), args.dir.join(format!("{n}.key"))]).collect();
    if !args.force {
        let existing: Vec<PathBuf> = targets.iter().filter(|p| p.exists()).cloned().collect();
        if !existing.is_empty() {
            return Err(CertsError::Exists { paths: existing });
        }
    }

    let now = OffsetDateTime::now_utc();
    let pairs = make_pairs(sans, now - CLOCK_SKEW, now + Duration::days(i64::from(args.days)), now)?;

    fs::create_dir_all(&args.dir).map_err(|source| CertsError::Write { path: args.dir.clone(), source })?;
    let mut written = Vec::with_capacity(6);
    for pair in pairs {
        let cert = args.dir.join(format!("{}.crt", pair.name));
        write_file(&cert, &pair.cert_pem, 0o644)?;
        written.push(Written { path: cert, what: pair.what, not_after: Some(pair.not_after) });
        let key = args.dir.join(format!("{}.key", pair.name));
        write_file(&key, &pair.key_pem, 0o600)?;
        written.push(Written { path: key, what: "private key, mode 0600", not_after: None });
    }
    Ok(written)
}

fn make_pairs(
    server_sans: Vec<SanType>,
    not_before: OffsetDateTime,
    leaf_not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Vec<Pair>, CertsError> {
    let key = |what| KeyPair::generate().map_err(|source| CertsError::Generate { what, source });

    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("RedisForge development CA");
    // Path length 0: this CA signs leaf certificates only, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(i64::from(CA_DAYS));
    let ca_not_after = ca.not_after;
    let ca_key = key("CA key")?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, ca_key)
        .map_err(|source| CertsError::Generate { what: "CA certificate", source })?;

    let leaf = |cn: &str, sans: Vec<SanType>, ekus: Vec<ExtendedKeyUsagePurpose>, what: &'static str| {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = leaf_not_after;
        let key = key(what)?;
        let cert = params.signed_by(&key, &ca).map_err(|source| CertsError::Generate { what, source })?;
        Ok::<_, CertsError>((cert.pem(), key.serialize_pem()))
    };

    let server_cn = match server_sans.first() {
        Some(SanType::DnsName(name)) => name.as_str().to_owned(),
        Some(SanType::IpAddress(ip)) => ip.to_string(),
        _ => "redisforge-server".to_owned(),
    };
    // clientAuth too: a Redis node presents this same certificate when it connects to its peers.
    let server_ekus = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (server_cert, server_key) = leaf(&server_cn, server_sans, server_ekus, "server certificate")?;
    let (client_cert, client_key) =
        leaf(CLIENT_CN, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth], "client certificate")?;

    Ok(vec![
        Pair { name: "ca", what: "CA certificate", cert_pem: ca.pem(), key_pem: ca_key_pem, not_after: ca_not_after },
        Pair {
            name: "server",
            what: "server certificate for serverAuth and clientAuth",
            cert_pem: server_cert,
            key_pem: server_key,
            not_after: leaf_not_after,
        },
        Pair {
            name: "client",
            what: "client certificate for clientAuth, CN redisforge-client",
            cert_pem: client_cert,
            key_pem: client_key,
            not_after: leaf_not_after,
        },
    ])
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "RedisForge");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A `--hosts` entry as a subject alternative name: an IP address (also `[v6]`) or a DNS name
/// (optionally a `*.` wildcard).
fn san(host: &str) -> Result<SanType, CertsError> {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(host) {
        return Err(CertsError::BadHost(host.to_owned()));
    }
    let name = host.to_owned().try_into().map_err(|_| CertsError::BadHost(host.to_owned()))?;
    Ok(SanType::DnsName(name))
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 1..=63 bytes
/// each, 253 in all, the last not all digits (that would be a malformed IP address).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= 253
        && labels.iter().all(label_ok)
        && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `contents` to `path` with `mode`, replacing any existing file atomically.
///
/// Written to a temporary file first and renamed: a key file never exists, even briefly, with
/// looser permissions or half written, and an overwritten file gets `mode` too.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write { path: path.to_owned(), source };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = result.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> GenerateArgs {
        GenerateArgs {
            dir: dir.to_owned(),
            hosts: DEFAULT_HOSTS.split(',').map(str::to_owned).collect(),
            days: 365,
            force: false,
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn hosts_become_ip_or_dns_names() {
        assert!(matches!(san("localhost").unwrap(), SanType::DnsName(n) if n.as_str() == "localhost"));
        assert!(matches!(san("redis-1.prod.internal").unwrap(), SanType::DnsName(_)));
        assert!(matches!(san("*.redis.internal").unwrap(), SanType::DnsName(_)));
        assert!(matches!(san("10.0.1.10").unwrap(), SanType::IpAddress(ip) if ip.to_string() == "10.0.1.10"));
        assert!(matches!(san("::1").unwrap(), SanType::IpAddress(ip) if ip.is_loopback()));
        assert!(matches!(san("[::1]").unwrap(), SanType::IpAddress(ip) if ip.is_loopback()));
        for bad in ["", "bad host", "-lead.example", "trail-.example", "a..b", "300.1.1.1", "ex_ample.com", "héllo"] {
            assert!(matches!(san(bad), Err(CertsError::BadHost(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn generate_writes_six_pem_files_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let written = generate(&args(&out)).unwrap();
        let names: Vec<_> = written.iter().map(|w| w.path.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"]);
        for w in &written {
            let text = fs::read_to_string(&w.path).unwrap();
            let is_key = w.path.extension().is_some_and(|e| e == "key");
            let header = if is_key { "-----BEGIN PRIVATE KEY-----" } else { "-----BEGIN CERTIFICATE-----" };
            assert!(text.starts_with(header), "{}: {text}", w.path.display());
            #[cfg(unix)]
            assert_eq!(mode(&w.path), if is_key { 0o600 } else { 0o644 }, "{}", w.path.display());
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&out).unwrap().count(), 6);
    }

    #[test]
    fn ca_outlives_the_leaves_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(&GenerateArgs { days: 30, ..args(dir.path()) }).unwrap();
        let until = |name: &str| written.iter().find(|w| w.path.ends_with(name)).unwrap().not_after.unwrap();
        let now = OffsetDateTime::now_utc();
        assert!((until("ca.crt") - now - Duration::days(3650)).abs() < Duration::minutes(1));
        assert!((until("server.crt") - now - Duration::days(30)).abs() < Duration::minutes(1));
        assert_eq!(until("server.crt"), until("client.crt"));
    }

    #[test]
    fn existing_files_are_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let server_crt = dir.path().join("server.crt");
        fs::write(&server_crt, "mine").unwrap();

        let err = generate(&args(dir.path())).unwrap_err();
        assert!(matches!(err, CertsError::Exists { ref paths } if *paths == [server_crt.clone()]), "{err:?}");
        assert!(err.to_string().contains("server.crt") && err.to_string().contains("--force"), "{err}");
        // Nothing written, not even the files that did not exist.
        assert_eq!(fs::read_to_string(&server_crt).unwrap(), "mine");
        assert!(!dir.path().join("ca.crt").exists());
    }

    #[test]
    fn force_replaces_files_and_tightens_key_permissions() {
        let dir = tempfile::tempdir().unwrap();
        generate(&args(dir.path())).unwrap();
        let key = dir.path().join("server.key");
        let before = fs::read_to_string(&key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        }

        generate(&GenerateArgs { force: true, ..args(dir.path()) }).unwrap();
        assert_ne!(fs::read_to_string(&key).unwrap(), before, "a fresh key was written");
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn bad_arguments_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never");
        for (bad, expected) in [
            (GenerateArgs { days: 0, ..args(&out) }, "--days"),
            (GenerateArgs { days: CA_DAYS + 1, ..args(&out) }, "--days"),
            (GenerateArgs { hosts: vec![], ..args(&out) }, "no host"),
            (GenerateArgs { hosts: vec!["localhost".into(), "not a host".into()], ..args(&out) }, "not a host"),
        ] {
            let err = generate(&bad).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert!(!out.exists());
    }
}
