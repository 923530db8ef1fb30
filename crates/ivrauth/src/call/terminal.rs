//! The caller's side in the terminal: the transcript (stdout, or stderr when stdout holds
//! the JSON), the keys read per prompt (a line, or key by key with `*` echoed for a secure
//! prompt on a terminal), and `--digits` scripts. Secure keys are never shown.

use std::collections::VecDeque;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context as _};
use zeroize::Zeroize as _;

use ivrauth_core::secret::Secret;

use super::{Ask, Keys};

/// `--digits`: comma-separated entries of keys (0-9, *, #); empty entries are silence.
/// Errors name the entry by position, never its content (it may be a PIN).
pub(super) fn parse_digits(text: &str) -> anyhow::Result<VecDeque<Keys>> {
    let mut out = VecDeque::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if !entry.chars().all(is_key) {
            bail!(
                "--digits entry #{} holds something that is not a phone key (0-9, * and #)",
                i + 1
            );
        }
        out.push_back((!entry.is_empty()).then(|| Secret::new(entry.to_owned())));
    }
    Ok(out)
}

pub(super) fn is_key(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

/// Where the dialogue is shown, and the spoken texts so far.
pub(super) struct Ui {
    pub(super) json: bool,
    /// Nothing but the JSON (scripted `--json`).
    quiet: bool,
    pub(super) prompts: Vec<String>,
}

impl Ui {
    pub(super) fn new(json: bool, scripted: bool) -> Self {
        Ui {
            json,
            quiet: json && scripted,
            prompts: Vec::new(),
        }
    }

    /// The dialogue goes to stdout, or to stderr when stdout is the JSON's.
    pub(super) fn write(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{text}");
            let _ = err.flush();
        } else {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub(super) fn ivr_says(&mut self, text: &str) {
        self.prompts.push(text.to_owned());
        self.write(&format!("ivr: {text}\n"));
    }

    pub(super) fn say_note(&self, text: &str) {
        self.write(&format!("  {text}\n"));
    }

    pub(super) fn hint(&self, ask: &Ask) {
        let mut parts = Vec::new();
        if ask.menu {
            parts.push(format!("menu: {}", ask.choices.join(", ")));
        } else if ask.min_digits == ask.max_digits && ask.max_digits > 0 {
            parts.push(format!("{} keys", ask.max_digits));
        } else if ask.max_digits > 0 {
            parts.push(format!("{}-{} keys", ask.min_digits, ask.max_digits));
        }
        if !ask.finish_on_key.is_empty() && !ask.menu {
            parts.push(format!("end with {}", ask.finish_on_key));
        }
        if ask.secure {
            parts.push("secure: masked, never shown".to_owned());
        }
        self.write(&format!("  [{}]\n", parts.join("; ")));
    }

    /// A scripted answer, as the transcript shows it.
    pub(super) fn scripted(&self, keys: &Keys, secure: bool) {
        self.write(&format!("you> {}\n", shown_keys(keys, secure)));
    }
}

/// Keys as the transcript shows them: secure ones never.
fn shown_keys(keys: &Keys, secure: bool) -> String {
    match keys {
        None => "(silence)".to_owned(),
        Some(_) if secure => "********".to_owned(),
        Some(k) => k.expose().clone(),
    }
}

/// Read the caller's keys for `ask` from the terminal or standard input. `Err(why)`: the
/// caller hung up (end of input, or Ctrl-C while typing a secret).
pub(super) async fn read_keys(ask: &Ask, ui: &Ui) -> anyhow::Result<Result<Keys, &'static str>> {
    let stdin_tty = std::io::stdin().is_terminal();
    loop {
        ui.write("you> ");
        let ask2 = ask.clone();
        let json = ui.json;
        let read = tokio::task::spawn_blocking(move || read_entry(&ask2, stdin_tty, json))
            .await
            .context("the terminal reader failed")?
            .context("cannot read the keys")?;
        match read {
            Entry::HungUp(why) => {
                ui.write("\n");
                return Ok(Err(why));
            }
            Entry::NotKeys => {
                ui.say_note("only 0-9, * and # are keys; try again");
            }
            Entry::Keys(k) => {
                if !stdin_tty {
                    // Nothing echoed the line: show it (masked) in the transcript.
                    ui.write(&format!("{}\n", shown_keys(&k, ask.secure)));
                }
                return Ok(Ok(k));
            }
        }
    }
}

enum Entry {
    Keys(Keys),
    NotKeys,
    /// Why.
    HungUp(&'static str),
}

/// One entry, blocking. A secure entry on a terminal is read key by key in raw mode,
/// echoing `*` (on stderr's terminal when stdout is the JSON's); anything else is a line (a
/// secure one on a terminal that cannot go raw is read without echo).
fn read_entry(ask: &Ask, stdin_tty: bool, json: bool) -> std::io::Result<Entry> {
    if ask.secure && stdin_tty {
        let (out, err) = (console::Term::stdout(), console::Term::stderr());
        let term = if out.is_term() && !json {
            Some(out)
        } else if err.is_term() {
            Some(err)
        } else {
            None
        };
        return match term {
            Some(term) => read_masked(&term, ask),
            None => {
                let mut line = rpassword::read_password()?;
                let entry = entry_from(&line);
                line.zeroize();
                Ok(entry)
            }
        };
    }
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line)?;
    if n == 0 {
        return Ok(Entry::HungUp("end of input"));
    }
    let entry = entry_from(&line);
    line.zeroize();
    Ok(entry)
}

fn entry_from(line: &str) -> Entry {
    let keys: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if keys.is_empty() {
        Entry::Keys(None)
    } else if keys.chars().all(is_key) {
        Entry::Keys(Some(Secret::new(keys)))
    } else {
        let mut keys = keys;
        keys.zeroize();
        Entry::NotKeys
    }
}

/// A secret typed key by key, each echoed as `*`; Enter, the finish key or the most digits
/// the prompt takes end it; Backspace takes a key back; Ctrl-C hangs up.
fn read_masked(term: &console::Term, ask: &Ask) -> std::io::Result<Entry> {
    use console::Key;
    let finish = ask.finish_on_key.chars().next();
    let mut keys = String::new();
    let result = loop {
        match term.read_key_raw() {
            Err(e) => break Err(e),
            Ok(Key::Enter) => break Ok(()),
            Ok(Key::CtrlC) => {
                keys.zeroize();
                term.write_line("")?;
                return Ok(Entry::HungUp("Ctrl-C"));
            }
            Ok(Key::Backspace) => {
                if keys.pop().is_some() {
                    term.clear_chars(1)?;
                }
            }
            Ok(Key::Char(c)) if is_key(c) => {
                keys.push(c);
                term.write_str("*")?;
                let digits = keys.chars().filter(|k| Some(*k) != finish).count();
                if Some(c) == finish || (ask.max_digits > 0 && digits >= ask.max_digits as usize) {
                    break Ok(());
                }
            }
            Ok(_) => {}
        }
    };
    term.write_line("")?;
    if let Err(e) = result {
        keys.zeroize();
        return Err(e);
    }
    Ok(if keys.is_empty() {
        Entry::Keys(None)
    } else {
        Entry::Keys(Some(Secret::new(keys)))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn digits_parse_into_entries_and_silences() {
        let d = parse_digits("10001#, 2468# ,,9").unwrap();
        let shown: Vec<String> = d.iter().map(|k| shown_keys(k, false)).collect();
        assert_eq!(shown, ["10001#", "2468#", "(silence)", "9"]);
        assert_eq!(parse_digits("").unwrap().len(), 1);
        assert_eq!(parse_digits(",,,").unwrap().len(), 4);
    }

    #[test]
    fn bad_digits_name_the_entry_not_its_content() {
        let err = parse_digits("1,24x68").unwrap_err().to_string();
        assert!(err.contains("#2"), "{err}");
        assert!(!err.contains("24x68"), "{err}");
    }

    #[test]
    fn secure_keys_are_never_shown() {
        let k = Some(Secret::new("2468#".to_owned()));
        assert_eq!(shown_keys(&k, true), "********");
        assert!(matches!(entry_from(" 12 34#\n"), Entry::Keys(Some(k)) if k.expose() == "1234#"));
        assert!(matches!(entry_from("\n"), Entry::Keys(None)));
        assert!(matches!(entry_from("12a\n"), Entry::NotKeys));
    }
}
