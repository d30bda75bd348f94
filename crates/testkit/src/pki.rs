//! A throwaway PKI for TLS tests, made with the `openssl` CLI: a CA, a server certificate
//! for 127.0.0.1 and a client certificate it signed, and an unrelated CA that signed
//! neither. EC P-256 keys, PKCS#8 PEM, valid for two days.
//!
//! ```no_run
//! use secretsync_testkit::pki::TestPki;
//!
//! let Some(pki) = TestPki::generate() else { return }; // SECRETSYNC_SKIP_TOOLS opt-out
//! let ca = pki.ca_pem();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{TempDir, require_tool};

/// The files live in a temporary directory removed on drop.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// `None` when `openssl` is missing and SECRETSYNC_SKIP_TOOLS is set; panics when a
    /// command fails (with its stderr).
    pub fn generate() -> Option<TestPki> {
        let openssl = require_tool("openssl")?;
        let pki = TestPki {
            dir: TempDir::new("pki"),
        };
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(pki.dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "wrong-ca"] {
            let (keyout, out, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=secretsync test {ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(key);
            args.extend([
                "-keyout", &keyout, "-out", &out, "-days", "2", "-subj", &subj,
            ]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            run(&args);
        }
        for (leaf, usage, extra) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            let ext = format!(
                "{extra}extendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n"
            );
            std::fs::write(pki.path(&format!("{leaf}.ext")), ext).expect("write extensions");
            let (keyout, csr, out, extfile, subj) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.pem"),
                format!("{leaf}.ext"),
                format!("/CN=secretsync test {leaf}"),
            );
            let mut args = vec!["req"];
            args.extend(key);
            args.extend(["-keyout", &keyout, "-out", &csr, "-subj", &subj]);
            run(&args);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &out,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Some(pki)
    }

    /// A file of this PKI: `ca.pem`, `wrong-ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn ca_pem(&self) -> String {
        self.read("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn wrong_ca_pem(&self) -> String {
        self.read("wrong-ca.pem")
    }

    pub fn client_cert_pem(&self) -> String {
        self.read("client.pem")
    }

    pub fn client_key_pem(&self) -> String {
        self.read("client.key")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// What `openssl x509` reads from a PEM certificate (the first one of a chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `CN=api.example.internal`
    pub subject: String,
    /// `DNS:api.example.internal, DNS:www.example.internal, IP Address:127.0.0.1`
    pub subject_alt_names: String,
    /// Upper-case hex without separators, as openssl prints it.
    pub serial: String,
}

/// Parses `pem` with the `openssl` CLI, so a test checks the certificate with a parser the
/// operator does not use. `None` when `openssl` is missing and SECRETSYNC_SKIP_TOOLS is set;
/// panics when the PEM does not parse.
pub fn inspect_certificate(pem: &str) -> Option<CertificateInfo> {
    use std::io::Write as _;
    let openssl = require_tool("openssl")?;
    let mut child = Command::new(&openssl)
        .args([
            "x509",
            "-noout",
            "-nameopt",
            "RFC2253",
            "-subject",
            "-serial",
            "-ext",
            "subjectAltName",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run openssl x509: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(pem.as_bytes())
        .expect("write the certificate to openssl");
    let out = child.wait_with_output().expect("openssl x509 finishes");
    assert!(
        out.status.success(),
        "openssl x509 could not parse the certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    let mut info = CertificateInfo {
        subject: String::new(),
        subject_alt_names: String::new(),
        serial: String::new(),
    };
    while let Some(line) = lines.next() {
        if let Some(subject) = line.strip_prefix("subject=") {
            info.subject = subject.trim().to_owned();
        } else if let Some(serial) = line.strip_prefix("serial=") {
            info.serial = serial.trim().to_owned();
        } else if line.starts_with("X509v3 Subject Alternative Name") {
            info.subject_alt_names = lines.next().unwrap_or_default().to_owned();
        }
    }
    Some(info)
}
