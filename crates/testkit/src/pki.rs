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
