//! A real, throwaway OpenLDAP server (`slapd`) on `127.0.0.1`, seeded with a small
//! directory, for testing the LDAP identity provider against the real thing.
//!
//! [`Slapd::start`] writes a `slapd.conf` into a temporary directory (mdb backend, suffix
//! [`BASE_DN`], the core/cosine/nis/inetorgperson schemas), loads the seed entries offline
//! with `slapadd`, starts `slapd` in the foreground on a free loopback port and waits until
//! its root DSE answers (polling with a deadline, no fixed sleeps). The process is killed
//! when the [`Slapd`] is dropped. Its `stats` log (connections, binds, searches, extended
//! operations, results) goes to a file that tests can read with [`Slapd::log`] to assert
//! what did or did not reach the directory.
//!
//! The seed ([`SEED_USERS`]): `ou=people` with three `inetOrgPerson` entries
//! keyed by `employeeNumber` — [`ADA`] (10001, "Ada Lovelace", PIN 2468), [`GRACE`] (10002,
//! "Grace Hopper", PIN 1357) and [`ALAN`] (10003, "Alan Turing", PIN 9753, no `givenName`
//! and no `mail`) — and the service account [`SERVICE_DN`], which may read everything and
//! write (not read) `userPassword`, so it can run the Password Modify extended operation for
//! other entries. Everyone may bind as themselves and change their own password.
//!
//! [`SlapdBuilder::tls`] also generates a throwaway CA and a server certificate for
//! `127.0.0.1` with `openssl`, and listens for `ldaps://` as well (StartTLS then works on
//! the plain port). [`SlapdBuilder::allow_bind_anon_dn`] makes a bind with a DN and an empty
//! password succeed as anonymous, as some directories (Active Directory) do by default.
//!
//! The binaries come from Debian's `slapd` and `ldap-utils` packages:
//! `scripts/install-test-deps` installs them.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::{err, Result, TestkitError};

/// The directory suffix.
pub const BASE_DN: &str = "dc=example,dc=test";
/// Where the people are.
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=test";
/// The root DN (bypasses ACLs).
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=test";
pub const ROOT_PASSWORD: &str = "admin-secret";
/// The service account an application binds as to search (and change passwords).
pub const SERVICE_DN: &str = "cn=ivrauth,dc=example,dc=test";
pub const SERVICE_PASSWORD: &str = "service-secret";

/// A seeded person.
#[derive(Debug, Clone, Copy)]
pub struct SeedUser {
    /// `employeeNumber`.
    pub account: &'static str,
    pub uid: &'static str,
    pub dn: &'static str,
    pub cn: &'static str,
    pub given_name: Option<&'static str>,
    pub mail: Option<&'static str>,
    pub phone: &'static str,
    pub password: &'static str,
}

pub const ADA: SeedUser = SeedUser {
    account: "10001",
    uid: "ada",
    dn: "uid=ada,ou=people,dc=example,dc=test",
    cn: "Ada Lovelace",
    given_name: Some("Ada"),
    mail: Some("ada@example.test"),
    phone: "+15550100001",
    password: "2468",
};

pub const GRACE: SeedUser = SeedUser {
    account: "10002",
    uid: "grace",
    dn: "uid=grace,ou=people,dc=example,dc=test",
    cn: "Grace Hopper",
    given_name: Some("Grace"),
    mail: Some("grace@example.test"),
    phone: "+15550100002",
    password: "1357",
};

pub const ALAN: SeedUser = SeedUser {
    account: "10003",
    uid: "alan",
    dn: "uid=alan,ou=people,dc=example,dc=test",
    cn: "Alan Turing",
    given_name: None,
    mail: None,
    phone: "+15550100003",
    password: "9753",
};

/// Every seeded person.
pub const SEED_USERS: [SeedUser; 3] = [ADA, GRACE, ALAN];

/// How long any helper command or the start-up may take.
const STEP_DEADLINE: Duration = Duration::from_secs(20);
/// How many free ports to try when slapd loses the race for one.
const START_ATTEMPTS: usize = 5;

/// How to start a [`Slapd`].
#[derive(Debug, Clone, Default)]
pub struct SlapdBuilder {
    tls: bool,
    allow_bind_anon_dn: bool,
}

impl SlapdBuilder {
    /// Generate a CA and server certificate, listen on `ldaps://` too and allow StartTLS.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// `allow bind_anon_dn`: a bind with a DN and an empty password succeeds as anonymous
    /// (OpenLDAP's default refuses it with 53, unwillingToPerform).
    pub fn allow_bind_anon_dn(mut self, on: bool) -> Self {
        self.allow_bind_anon_dn = on;
        self
    }

    pub async fn start(self) -> Result<Slapd> {
        let slapd = find_tool("slapd")?;
        let slapadd = find_tool("slapadd")?;
        let slappasswd = find_tool("slappasswd")?;
        let ldapsearch = find_tool("ldapsearch")?;

        let dir = tempfile::TempDir::new().map_err(|e| err("temp dir", e))?;
        let db = dir.path().join("db");
        std::fs::create_dir(&db).map_err(|e| err("create db dir", e))?;

        let tls = if self.tls {
            Some(generate_certificates(dir.path()).await?)
        } else {
            None
        };

        let conf_path = dir.path().join("slapd.conf");
        let conf = slapd_conf(dir.path(), &db, tls.as_ref(), self.allow_bind_anon_dn);
        std::fs::write(&conf_path, conf).map_err(|e| err("write slapd.conf", e))?;

        let mut hashes = Vec::new();
        for pw in [
            SERVICE_PASSWORD,
            ADA.password,
            GRACE.password,
            ALAN.password,
        ] {
            hashes.push(hash_password(&slappasswd, pw).await?);
        }
        let ldif_path = dir.path().join("seed.ldif");
        std::fs::write(&ldif_path, seed_ldif(&hashes)).map_err(|e| err("write seed", e))?;
        let mut load = Command::new(&slapadd);
        load.arg("-q")
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(&ldif_path);
        run(load, "slapadd").await?;

        let log_path = dir.path().join("slapd.log");
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let tls_port = if tls.is_some() {
                Some(free_port()?)
            } else {
                None
            };
            let uri = format!("ldap://127.0.0.1:{port}");
            let ldaps_uri = tls_port.map(|p| format!("ldaps://127.0.0.1:{p}"));
            let mut listen = format!("{uri}/");
            if let Some(u) = &ldaps_uri {
                let _ = write!(listen, " {u}/");
            }
            let log = std::fs::File::create(&log_path).map_err(|e| err("create log", e))?;
            let log_err = log.try_clone().map_err(|e| err("clone log", e))?;
            // -d 256: stay in the foreground and log `stats` (connections, operations,
            // results) to stderr.
            let child = StdCommand::new(&slapd)
                .arg("-f")
                .arg(&conf_path)
                .arg("-h")
                .arg(&listen)
                .arg("-d")
                .arg("256")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| err("spawn slapd", e))?;
            let mut guard = KillOnDrop(Some(child));
            match wait_ready(&mut guard, &log_path, &uri, &ldapsearch).await? {
                Ready::Yes => {
                    let Some(child) = guard.0.take() else {
                        return Err(TestkitError("slapd child vanished".into()));
                    };
                    return Ok(Slapd {
                        child,
                        uri,
                        ldaps_uri,
                        ca_cert: tls.as_ref().map(|t| t.ca_cert.clone()),
                        log_path,
                        dir,
                    });
                }
                // Lost the race for the port: the guard kills nothing (it exited); retry.
                Ready::PortTaken(log) => last_failure = log,
            }
        }
        Err(TestkitError(format!(
            "slapd could not bind a free port in {START_ATTEMPTS} attempts; last log:\n{last_failure}"
        )))
    }
}

/// A running slapd; killed on drop. See the module docs for what it holds.
pub struct Slapd {
    child: Child,
    uri: String,
    ldaps_uri: Option<String>,
    ca_cert: Option<PathBuf>,
    log_path: PathBuf,
    // Last: removed after the process was killed.
    dir: tempfile::TempDir,
}

enum Ready {
    Yes,
    PortTaken(String),
}

impl Slapd {
    /// Start without TLS.
    pub async fn start() -> Result<Slapd> {
        Self::builder().start().await
    }

    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// `ldap://127.0.0.1:PORT` (no trailing slash).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    pub fn ldaps_uri(&self) -> Option<&str> {
        self.ldaps_uri.as_deref()
    }

    /// The PEM file of the CA that signed the server certificate, when started with TLS.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The temporary directory holding `slapd.conf`, the database, the log and any
    /// certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }

    pub fn people_dn(&self) -> &'static str {
        PEOPLE_DN
    }

    pub fn service_dn(&self) -> &'static str {
        SERVICE_DN
    }

    pub fn service_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }

    pub fn root_dn(&self) -> &'static str {
        ROOT_DN
    }

    pub fn root_password(&self) -> &'static str {
        ROOT_PASSWORD
    }

    /// slapd's `stats` log so far (one line per connection event and operation, e.g.
    /// `conn=1001 op=0 BIND dn="uid=ada,ou=people,dc=example,dc=test" method=128`).
    pub fn log(&self) -> Result<String> {
        let bytes = std::fs::read(&self.log_path).map_err(|e| err("read slapd log", e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The log's current length, to read only what comes after with [`Slapd::log_since`].
    pub fn log_mark(&self) -> Result<usize> {
        Ok(self.log()?.len())
    }

    /// The log written since `mark`.
    pub fn log_since(&self, mark: usize) -> Result<String> {
        let log = self.log()?;
        Ok(log.get(mark..).unwrap_or_default().to_owned())
    }

    /// Wait (up to `timeout`) until the log written since `mark` contains `needle`, and
    /// return that part of the log. slapd writes its log asynchronously, so a test that
    /// asserts something is *absent* should first wait for a later, expected line.
    pub async fn wait_for_log(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let since = self.log_since(mark)?;
            if since.contains(needle) {
                return Ok(since);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError(format!(
                    "slapd log did not show {needle:?} within {timeout:?}; it shows:\n{since}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills a slapd that never became ready.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Poll the root DSE until it answers; notice an early exit (lost port race).
async fn wait_ready(
    guard: &mut KillOnDrop,
    log_path: &Path,
    uri: &str,
    ldapsearch: &Path,
) -> Result<Ready> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(child) = guard.0.as_mut() {
            if let Some(status) = child.try_wait().map_err(|e| err("slapd status", e))? {
                let log = read_log(log_path);
                if log.contains("errno=98") || log.contains("Address already in use") {
                    return Ok(Ready::PortTaken(log));
                }
                return Err(TestkitError(format!("slapd exited ({status}):\n{log}")));
            }
        }
        let mut probe = Command::new(ldapsearch);
        probe
            .args(["-x", "-LLL", "-H", uri, "-s", "base", "-b", ""])
            .arg("namingContexts")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(status)) = tokio::time::timeout(left, probe.status()).await {
            if status.success() {
                return Ok(Ready::Yes);
            }
        }
        if Instant::now() >= deadline {
            return Err(TestkitError(format!(
                "slapd did not answer within {STEP_DEADLINE:?}:\n{}",
                read_log(log_path)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct TlsFiles {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a leaf certificate for `127.0.0.1`/`localhost` signed by it (webpki refuses a
/// CA certificate used as the server's own).
async fn generate_certificates(dir: &Path) -> Result<TlsFiles> {
    let openssl = find_tool("openssl")?;
    let p = |name: &str| dir.join(name);
    let mut ca = Command::new(&openssl);
    ca.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-days", "2", "-subj", "/CN=ivrauth test CA"])
    .args(["-addext", "basicConstraints=critical,CA:TRUE"])
    .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    .arg("-keyout")
    .arg(p("ca.key"))
    .arg("-out")
    .arg(p("ca.pem"));
    run(ca, "openssl (CA)").await?;
    let mut csr = Command::new(&openssl);
    csr.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-subj", "/CN=127.0.0.1"])
    .arg("-keyout")
    .arg(p("server.key"))
    .arg("-out")
    .arg(p("server.csr"));
    run(csr, "openssl (CSR)").await?;
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| err("write server.ext", e))?;
    let mut sign = Command::new(&openssl);
    sign.args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("server.ext"))
        .arg("-out")
        .arg(p("server.pem"));
    run(sign, "openssl (sign)").await?;
    Ok(TlsFiles {
        ca_cert: p("ca.pem"),
        cert: p("server.pem"),
        key: p("server.key"),
    })
}

fn slapd_conf(dir: &Path, db: &Path, tls: Option<&TlsFiles>, allow_bind_anon_dn: bool) -> String {
    let mut c = String::new();
    for schema in ["core", "cosine", "nis", "inetorgperson"] {
        let _ = writeln!(c, "include /etc/ldap/schema/{schema}.schema");
    }
    c.push_str("modulepath /usr/lib/ldap\nmoduleload back_mdb\n");
    let _ = writeln!(c, "pidfile {}", dir.join("slapd.pid").display());
    let _ = writeln!(c, "argsfile {}", dir.join("slapd.args").display());
    if allow_bind_anon_dn {
        c.push_str("allow bind_anon_dn\n");
    }
    if let Some(t) = tls {
        let _ = writeln!(c, "TLSCACertificateFile {}", t.ca_cert.display());
        let _ = writeln!(c, "TLSCertificateFile {}", t.cert.display());
        let _ = writeln!(c, "TLSCertificateKeyFile {}", t.key.display());
    }
    c.push_str("database mdb\n");
    let _ = writeln!(c, "suffix \"{BASE_DN}\"");
    let _ = writeln!(c, "rootdn \"{ROOT_DN}\"");
    let _ = writeln!(c, "rootpw {ROOT_PASSWORD}");
    let _ = writeln!(c, "directory {}", db.display());
    c.push_str("maxsize 16777216\n");
    c.push_str("access to attrs=userPassword\n");
    c.push_str("  by self write\n");
    let _ = writeln!(c, "  by dn.exact=\"{SERVICE_DN}\" write");
    c.push_str("  by anonymous auth\n");
    c.push_str("  by * none\n");
    c.push_str("access to * by * read\n");
    c
}

/// The seed entries; `hashes` are the `{SSHA}` hashes of the service account's and then
/// each [`SEED_USERS`] password.
fn seed_ldif(hashes: &[String]) -> String {
    let hash = |i: usize| hashes.get(i).cloned().unwrap_or_default();
    let mut l = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: ivrauth\nuserPassword: {}\n\n",
        hash(0)
    );
    for (i, u) in SEED_USERS.iter().enumerate() {
        let sn = u.cn.split_whitespace().last().unwrap_or(u.cn);
        let _ = write!(
            l,
            "dn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {}\nsn: {sn}\n\
             employeeNumber: {}\ntelephoneNumber: {}\nuserPassword: {}\n",
            u.dn,
            u.uid,
            u.cn,
            u.account,
            u.phone,
            hash(i + 1)
        );
        if let Some(g) = u.given_name {
            let _ = writeln!(l, "givenName: {g}");
        }
        if let Some(m) = u.mail {
            let _ = writeln!(l, "mail: {m}");
        }
        l.push('\n');
    }
    l
}

async fn hash_password(slappasswd: &Path, password: &str) -> Result<String> {
    let mut cmd = Command::new(slappasswd);
    cmd.arg("-s").arg(password);
    let out = run(cmd, "slappasswd").await?;
    let hash = out.trim().to_owned();
    if !hash.starts_with('{') {
        return Err(TestkitError(format!("slappasswd printed {hash:?}")));
    }
    Ok(hash)
}

/// Run a helper to completion within the deadline; its stdout, or an error with stderr.
async fn run(mut cmd: Command, what: &str) -> Result<String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(STEP_DEADLINE, cmd.output())
        .await
        .map_err(|_| TestkitError(format!("{what} took longer than {STEP_DEADLINE:?}")))?
        .map_err(|e| err(what, e))?;
    if !out.status.success() {
        return Err(TestkitError(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port that was free a moment ago (bind port 0, read it, let it go).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err("bind 127.0.0.1:0", e))?;
    let port = l.local_addr().map_err(|e| err("local addr", e))?.port();
    Ok(port)
}

/// `name` on PATH, or in the sbin directories Debian puts slapd in (often off a user's PATH).
fn find_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TestkitError(format!(
                "`{name}` not found: run scripts/install-test-deps (Debian: slapd ldap-utils openssl)"
            ))
        })
}
