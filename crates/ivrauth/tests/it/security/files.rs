//! Files only the server's user can read: everything `serve` creates in the data directory
//! is a directory 0700 or a file 0600, whatever umask it was started with, and an existing
//! data directory that other users can open is warned about.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `ivrauth serve ARGS` in `cwd` with a clean `IVRAUTH_*` environment, started by a shell
/// under `umask`; its stderr goes to `cwd/serve.err`.
struct Serve {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_file: PathBuf,
}

impl Serve {
    fn start(cwd: &Path, umask: &str, args: &[&str]) -> Serve {
        let stderr_file = cwd.join("serve.err");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ivrauth"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir", "data"])
            .args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IVRAUTH_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap();
        let (tx, stdout) = mpsc::channel();
        let reader = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            stdout,
            stderr_file,
        }
    }

    /// Wait for a stdout line containing `needle` (the server's own progress, not time).
    fn wait_for(&self, needle: &str) {
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "no `{needle}` line from serve ({e}); stderr: {}",
                    self.stderr()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every entry under `dir` (recursively), relative to it, with its mode and kind.
fn entries(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let is_dir = std::fs::symlink_metadata(&path).unwrap().is_dir();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            found.push((name, mode(&path), is_dir));
            if is_dir {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_fresh_demo_server_creates_only_owner_only_files_even_under_umask_000() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(tmp.path(), "000", &["--demo"]);
    // The last line of the demo's instructions: the store, keys and demo accounts exist.
    server.wait_for("call --flow demo-pin --server");

    let data = tmp.path().join("data");
    assert_eq!(mode(&data), 0o700, "the data directory");
    let found = entries(&data);
    let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in [
        "ivrauth.db",
        "ivrauth.db-wal",
        "ivrauth.db-shm",
        "call-session.key",
        "demo-accounts.txt",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {found:?}");
    }
    for (name, mode, is_dir) in &found {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, wanted, "{name} is {mode:04o}: {found:?}");
    }
    assert!(
        !server.stderr().contains("other users"),
        "{}",
        server.stderr()
    );
}

#[test]
fn an_existing_data_directory_open_to_others_is_warned_about_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // An empty file is a new database to SQLite.
    let db = data.join("ivrauth.db");
    std::fs::write(&db, "").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = Serve::start(tmp.path(), "022", &[]);
    // The check runs before the server listens.
    server.wait_for("ivrauth listening on");
    let stderr = server.stderr();
    let warning = |name: &str| {
        stderr
            .lines()
            .find(|l| l.contains("WARN") && l.contains(name) && l.contains("other users"))
            .unwrap_or_else(|| panic!("no warning naming {name}: {stderr}"))
            .to_owned()
    };
    // Named as given (`--data-dir data`), with the command that fixes each.
    let dir_warning = warning("data directory data ");
    assert!(
        dir_warning.contains("mode 0755") && dir_warning.contains("chmod 700 data`"),
        "{dir_warning}"
    );
    let db_warning = warning("data file data/ivrauth.db ");
    assert!(
        db_warning.contains("mode 0644") && db_warning.contains("chmod 600 data/ivrauth.db`"),
        "{db_warning}"
    );
    // Reported, not changed: the operator may have meant it.
    assert_eq!(mode(&data), 0o755);
    assert_eq!(mode(&db), 0o644);
}
