//! What the CLI tests share: the binary as a user runs it, and its output read as text.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `ivrauth` binary run in `cwd`, with no `IVRAUTH_*` variable of the test's own
/// environment leaking in, logging warnings and errors.
pub fn ivrauth(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ivrauth"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IVRAUTH_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(cwd).env("RUST_LOG", "warn");
    cmd
}

/// A finished command's standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Run `cmd` with `input` on standard input (a pipe, not a terminal), its output captured.
pub fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
