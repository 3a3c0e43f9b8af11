//! Client certificates as identities (`tls.client_user`, Valkey's `tls-auth-clients-user`): with
//! mutual TLS, the verified certificate's common name or subject alternative name logs the client
//! in as that ACL user, with no AUTH. Certificates are made by `openssl`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use redis::{Client, ClientTlsConfig, Connection, TlsCertificates, Value};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, query_args};

const USERS: &str = "\
user app on >app-pass ~app:* +@all -@dangerous
user reporter on >report-pass ~* -@all +@read +ping +acl|whoami
user sleeper off >off-pass ~* +@all
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1, and one client certificate per `(file stem,
/// subject, extensions)`, all signed by the CA with P-256 keys.
fn certificates(clients: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=identity test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.crt",
        ],
    );
    let mut leaves =
        vec![("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")];
    leaves.extend_from_slice(clients);
    for (stem, subject, extensions) in leaves {
        let (key, csr, crt, ext) =
            (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.crt"), format!("{stem}.ext"));
        std::fs::write(d.join(&ext), format!("basicConstraints=CA:FALSE\n{extensions}")).expect("extensions");
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(d, &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr]);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
    }
    dir
}

fn proxy(certs: &Path, field: &str) -> Proxy {
    let users = certs.join("users.acl");
    std::fs::write(&users, USERS).expect("users");
    let extra = format!(
        "[listen]\nplain = \"@PLAIN@\"\ntls = \"@TLS@\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         client_user = \"{field}\"\n[auth]\nacl_file = \"{}\"\n",
        certs.join("server.crt").display(),
        certs.join("server.key").display(),
        certs.join("ca.crt").display(),
        users.display(),
    );
    Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() })
}

/// A TLS client presenting `<stem>.crt`.
fn client(proxy: &Proxy, certs: &Path, stem: &str) -> Connection {
    let read = |name: String| std::fs::read(certs.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let tls = TlsCertificates {
        client_tls: Some(ClientTlsConfig {
            client_cert: read(format!("{stem}.crt")),
            client_key: read(format!("{stem}.key")),
        }),
        root_cert: Some(read("ca.crt".to_owned())),
    };
    let addr = proxy.tls_addr().expect("TLS listener");
    let client = Client::build_with_tls(format!("rediss://{addr}"), tls).expect("TLS client");
    client.get_connection_with_timeout(Duration::from_secs(5)).expect("TLS connection")
}

fn whoami(con: &mut Connection) -> Result<Value, String> {
    query_args(con, &["ACL", "WHOAMI"])
}

#[test]
fn the_common_name_logs_the_client_in_as_that_user() {
    let certs = certificates(&[
        ("app", "/CN=app", "extendedKeyUsage=clientAuth\n"),
        ("stranger", "/CN=nobody-here", "extendedKeyUsage=clientAuth\n"),
        ("disabled", "/CN=sleeper", "extendedKeyUsage=clientAuth\n"),
    ]);
    let proxy = proxy(certs.path(), "cn");
    let mut app = client(&proxy, certs.path(), "app");
    assert_eq!(whoami(&mut app), Ok(Value::BulkString(b"app".to_vec())), "no AUTH needed");
    assert_eq!(query_args(&mut app, &["SET", "app:{id}1", "v"]), Ok(Value::Okay));
    let denied = query_args(&mut app, &["GET", "secret:{id}1"]).expect_err("outside app's keys");
    assert!(denied.contains("no permissions to access one of the keys"), "{denied}");
    // A certificate naming no user, or a user that is off, logs nobody in: AUTH is needed.
    for stem in ["stranger", "disabled"] {
        let mut con = client(&proxy, certs.path(), stem);
        let refused = query_args(&mut con, &["GET", "app:{id}1"]).expect_err("not logged in");
        assert!(refused.contains("NOAUTH") || refused.contains("Authentication required"), "{stem}: {refused}");
        assert_eq!(query_args(&mut con, &["AUTH", "app", "app-pass"]), Ok(Value::Okay));
    }
    assert!(proxy.log().contains("logged in by client certificate"));
}

#[test]
fn a_subject_alternative_name_can_name_the_user_instead() {
    let certs =
        certificates(&[("reporter", "/CN=ignored", "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:reporter\n")]);
    let proxy = proxy(certs.path(), "san");
    let mut reporter = client(&proxy, certs.path(), "reporter");
    assert_eq!(whoami(&mut reporter), Ok(Value::BulkString(b"reporter".to_vec())));
    let denied = query_args(&mut reporter, &["SET", "report:{id}", "v"]).expect_err("reporter only reads");
    assert!(denied.contains("no permissions to run the 'set' command"), "{denied}");
}
