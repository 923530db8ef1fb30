//! `ivrauth account import|add|list|show|set-pin|unlock|disable|enable`: manage the
//! built-in directory's accounts and everyone's lockout counters in the store.
//!
//! Safe while a server runs on the same data directory (SQLite WAL; every write is its own
//! transaction). A PIN is never taken from an argument: it is read from the terminal without
//! echo, or as one line from standard input when that is not a terminal. PINs are hashed
//! (argon2id with the configured `[identity] hash_m_kib`, `hash_t` and `hash_p`) by the same
//! code the server verifies with, and no output or audit record ever contains a PIN or a
//! hash. Every change is audited with the actor `cli`.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use zeroize::Zeroize as _;

use ivrauth_connect::SystemClock;
use ivrauth_core::audit::EventName;
use ivrauth_core::identity::{
    is_e164, AccountCounters, AccountNumber, AccountRules, HashParams, IdentityError,
    IdentityProvider as _,
};
use ivrauth_core::ports::{AccountRecord, AccountStore as _, LockoutStore as _};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::{Clock as _, UnixMillis};
use ivrauth_store::directory::{check_pin_format, hash_pin};
use ivrauth_store::hashpool::available_cores;
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

use crate::client_cmd::audit;
use crate::config::Settings;
use crate::table::Table;
use crate::{DataDirArg, ListArgs};

/// The exact header line of an import file.
const IMPORT_HEADER: [&str; 5] = ["account_number", "name", "phone", "email", "pin"];

/// Accounts hashed and written per transaction during an import.
const IMPORT_BATCH: usize = 64;

/// Most threads an import hashes on.
const IMPORT_THREADS: usize = 4;

/// Accounts read per page by `list`.
const LIST_PAGE: u32 = 500;

/// Longest name accepted.
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, clap::Subcommand)]
pub enum AccountCommand {
    /// Import accounts from a CSV file with the header `account_number,name,phone,email,pin`
    ///
    /// phone (E.164), email and pin (4-12 digits) may be empty; an account without a PIN
    /// cannot authenticate until `set-pin`. Valid rows are imported, the others are listed
    /// by line number with the reason; the exit status is 1 if any row was rejected.
    Import {
        /// The CSV file
        file: PathBuf,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Add one account, then read its PIN like `set-pin` (unless --no-pin)
    Add {
        /// Account number: 1-64 characters of letters, digits, `.`, `_`, `-`
        account: String,
        /// The account holder's name
        #[arg(long)]
        name: String,
        /// Phone number in E.164 form (+ and 8-15 digits)
        #[arg(long)]
        phone: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Create the account without a PIN (it cannot authenticate until `set-pin`)
        #[arg(long)]
        no_pin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List the accounts with their status
    List(ListArgs),
    /// Show one account: profile, status (active, locked, disabled) and lockout counters
    Show {
        account: String,
        /// Print one JSON line
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Set an account's PIN: typed without echo on a terminal, else one line of stdin
    ///
    /// The PIN must be 4-12 digits and differ from the current one and the last 5.
    SetPin {
        account: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Reset an account's lockout counters (any identity provider's account number)
    Unlock {
        account: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Disable an account: it no longer authenticates, whatever PIN is given
    Disable {
        account: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Enable a disabled account again
    Enable {
        account: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

impl AccountCommand {
    pub fn data_dir(&self) -> &Option<PathBuf> {
        match self {
            AccountCommand::Import { data, .. }
            | AccountCommand::Add { data, .. }
            | AccountCommand::List(ListArgs { data, .. })
            | AccountCommand::Show { data, .. }
            | AccountCommand::SetPin { data, .. }
            | AccountCommand::Unlock { data, .. }
            | AccountCommand::Disable { data, .. }
            | AccountCommand::Enable { data, .. } => &data.data_dir,
        }
    }
}

/// Run one command. Arguments are checked before the store is opened (and, for `add` and
/// `import`, made); the store is closed before returning, so the writes are checkpointed
/// into `ivrauth.db`.
pub async fn run(cmd: AccountCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut opened = None;
    let result = execute(cmd, settings, &mut opened).await;
    if let Some(store) = opened {
        store.close().await;
    }
    result
}

/// Open the store into `slot` (see `client_cmd::open` for `create`).
async fn open<'s>(
    slot: &'s mut Option<SqliteStore>,
    settings: &Settings,
    create: bool,
) -> anyhow::Result<&'s SqliteStore> {
    let store = crate::client_cmd::open(settings, create).await?;
    Ok(slot.insert(store))
}

async fn execute(
    cmd: AccountCommand,
    settings: &Settings,
    slot: &mut Option<SqliteStore>,
) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let params: HashParams = settings.identity.hash();
    match cmd {
        AccountCommand::Import { file, .. } => {
            let parsed = read_import(&file, settings.identity.account_rules())?;
            let store = open(slot, settings, true).await?;
            return import(parsed, store, params, now).await;
        }
        AccountCommand::Add {
            account,
            name,
            phone,
            email,
            no_pin,
            ..
        } => {
            let number = parse_number(settings, &account)?;
            let name = name.trim().to_owned();
            check_name(&name).map_err(|p| anyhow::anyhow!("--name: {p}"))?;
            let phone = non_empty(phone.as_deref());
            if phone.as_deref().is_some_and(|p| !is_e164(p)) {
                bail!("--phone: {}", RowProblem::Phone);
            }
            let email = non_empty(email.as_deref());
            if email.as_deref().is_some_and(|e| !is_email(e)) {
                bail!("--email: {}", RowProblem::Email);
            }
            let store = open(slot, settings, true).await?;
            if store.get_account(number.as_str()).await?.is_some() {
                bail!("account {number} already exists");
            }
            let pin_hash = if no_pin {
                None
            } else {
                let pin = read_pin()?;
                check_pin_format(pin.expose())?;
                Some(
                    tokio::task::spawn_blocking(move || hash_pin(&pin, params))
                        .await
                        .context("the hashing thread failed")??,
                )
            };
            let pin_set = pin_hash.is_some();
            let record = new_record(number.clone(), name, phone, email, pin_hash, now);
            match store.create_account(&record).await {
                Ok(()) => {}
                Err(ivrauth_core::ports::StoreError::Conflict) => {
                    bail!("account {number} already exists")
                }
                Err(e) => return Err(e).context("cannot store the account"),
            }
            audit(
                store,
                EventName::AccountCreated,
                number.as_str(),
                json!({ "pin_set": pin_set }),
                now,
            )
            .await?;
            println!(
                "account {number} created{}",
                if pin_set { "" } else { " without a PIN" }
            );
        }
        AccountCommand::List(ListArgs { json, .. }) => {
            let store = open(slot, settings, false).await?;
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .list_accounts(after.as_deref(), LIST_PAGE)
                    .await
                    .context("cannot list accounts")?;
                let Some(last) = page.last() else { break };
                after = Some(last.account.as_str().to_owned());
                let full = page.len() == LIST_PAGE as usize;
                for record in page {
                    let key = counter_key(settings, &record.account)?;
                    let counters = store.counters(&key).await?;
                    rows.push((record, counters));
                }
                if !full {
                    break;
                }
            }
            if json {
                let items: Vec<Value> = rows.iter().map(|(r, c)| account_json(r, c, now)).collect();
                println!("{}", Value::Array(items));
            } else if rows.is_empty() {
                println!("no accounts");
            } else {
                let mut table = Table::new(
                    &["ACCOUNT", "NAME", "PHONE", "STATUS", "FAILURES", "PIN"],
                    &[4],
                );
                for (r, c) in &rows {
                    table.row([
                        r.account.as_str().to_owned(),
                        r.name.clone(),
                        r.phone.as_deref().unwrap_or("-").to_owned(),
                        status(r, c, now).to_owned(),
                        c.failed_attempts.to_string(),
                        if r.pin_hash.is_some() { "set" } else { "-" }.to_owned(),
                    ]);
                }
                table.write(&mut std::io::stdout().lock())?;
            }
        }
        AccountCommand::Show { account, json, .. } => {
            let number = parse_number(settings, &account)?;
            let store = open(slot, settings, false).await?;
            let Some(record) = store.get_account(number.as_str()).await? else {
                bail!("no account {number}");
            };
            let counters = store.counters(&counter_key(settings, &number)?).await?;
            let v = account_json(&record, &counters, now);
            if json {
                println!("{v}");
            } else if let Value::Object(fields) = v {
                for (k, v) in fields {
                    let text = match v {
                        Value::Null => "-".to_owned(),
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    println!("{:<19} {text}", format!("{k}:"));
                }
            }
        }
        AccountCommand::SetPin { account, .. } => {
            let number = parse_number(settings, &account)?;
            let store = open(slot, settings, false).await?;
            if store.get_account(number.as_str()).await?.is_none() {
                bail!("no account {number}");
            }
            let pin = read_pin()?;
            check_pin_format(pin.expose())?;
            let directory = BuiltinDirectory::new(
                Arc::new(store.clone()),
                params,
                HashPool::new(1),
                Arc::new(SystemClock),
            )?;
            directory
                .change_secret(&number, &pin)
                .await
                .map_err(|e| match e {
                    IdentityError::InvalidSecret(why) => anyhow::anyhow!("PIN refused: {why}"),
                    other => anyhow::Error::new(other).context("cannot set the PIN"),
                })?;
            audit(
                store,
                EventName::AccountPinSet,
                number.as_str(),
                json!({}),
                now,
            )
            .await?;
            println!("PIN set for account {number}");
        }
        AccountCommand::Unlock { account, .. } => {
            let number = parse_number(settings, &account)?;
            let store = open(slot, settings, false).await?;
            let reset = store
                .unlock(&counter_key(settings, &number)?)
                .await
                .context("cannot reset the lockout counters")?;
            audit(
                store,
                EventName::AccountUnlocked,
                number.as_str(),
                json!({ "counters_reset": reset }),
                now,
            )
            .await?;
            if reset {
                println!("account {number} unlocked; its failure count is 0");
            } else {
                println!("account {number} had no failures recorded; nothing to unlock");
            }
        }
        AccountCommand::Disable { account, .. } => {
            let number = parse_number(settings, &account)?;
            set_disabled(open(slot, settings, false).await?, &number, true, now).await?;
        }
        AccountCommand::Enable { account, .. } => {
            let number = parse_number(settings, &account)?;
            set_disabled(open(slot, settings, false).await?, &number, false, now).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_disabled(
    store: &SqliteStore,
    number: &AccountNumber,
    disabled: bool,
    now: UnixMillis,
) -> anyhow::Result<()> {
    if !store
        .set_disabled(number.as_str(), disabled, now)
        .await
        .context("cannot update the account")?
    {
        bail!("no account {number}");
    }
    let (event, word) = if disabled {
        (EventName::AccountDisabled, "disabled")
    } else {
        (EventName::AccountEnabled, "enabled")
    };
    audit(store, event, number.as_str(), json!({}), now).await?;
    println!("account {number} {word}");
    Ok(())
}

/// Why an import row (or an `add` argument) was refused. Never holds the row's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RowProblem {
    #[error("malformed CSV row: {0}")]
    Malformed(&'static str),
    #[error("malformed CSV row: expected 5 fields, found {0}")]
    FieldCount(usize),
    #[error("invalid account number (1-64 characters of letters, digits, `.`, `_`, `-`)")]
    InvalidAccount,
    #[error("duplicate account number (first on line {0})")]
    DuplicateInFile(u64),
    #[error("duplicate: the account already exists")]
    AlreadyExists,
    #[error("empty name")]
    EmptyName,
    #[error("name longer than {MAX_NAME_CHARS} characters or with control characters")]
    BadName,
    #[error("phone not E.164 (+ and 8-15 digits)")]
    Phone,
    #[error("email not valid")]
    Email,
    #[error("PIN not 4-12 digits")]
    Pin,
    #[error("PIN could not be hashed: {0}")]
    Hash(String),
}

/// The account number in its one normal form (`[identity] account_fold_case`,
/// `account_strip_separators`), as the server keys it.
fn parse_number(settings: &Settings, account: &str) -> anyhow::Result<AccountNumber> {
    settings
        .identity
        .account_rules()
        .normalise(account)
        .map_err(|_| anyhow::anyhow!("{}", RowProblem::InvalidAccount))
}

/// The key the server keeps `number`'s lockout counters under (a keyed hash: the key is
/// derived from the call session keys, as `serve` derives it).
fn counter_key(settings: &Settings, number: &AccountNumber) -> anyhow::Result<String> {
    let (keys, _) = crate::serve::session_keys(settings)?;
    Ok(keys.account_key().counter_key(number))
}

fn check_name(name: &str) -> Result<(), RowProblem> {
    if name.is_empty() {
        Err(RowProblem::EmptyName)
    } else if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        Err(RowProblem::BadName)
    } else {
        Ok(())
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A plausible address: one `@` with text on both sides, no whitespace or control characters.
fn is_email(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn new_record(
    account: AccountNumber,
    name: String,
    phone: Option<String>,
    email: Option<String>,
    pin_hash: Option<String>,
    now: UnixMillis,
) -> AccountRecord {
    AccountRecord {
        account,
        name,
        greeting: None,
        phone,
        email,
        phone_verified: false,
        email_verified: false,
        disabled: false,
        pin_hash,
        pin_history: vec![],
        created_at: now,
        updated_at: now,
    }
}

/// `locked` while the counters lock the account, else `disabled` or `active`.
fn status(record: &AccountRecord, counters: &AccountCounters, now: UnixMillis) -> &'static str {
    if counters.is_locked(now) {
        "locked"
    } else if record.disabled {
        "disabled"
    } else {
        "active"
    }
}

/// What `show --json` and `list --json` print: never a PIN hash. `locked_until` is set only
/// while a timed lock is in force.
fn account_json(record: &AccountRecord, counters: &AccountCounters, now: UnixMillis) -> Value {
    let locked_until = counters
        .locked_until
        .filter(|t| now < *t)
        .map(UnixMillis::to_rfc3339);
    json!({
        "account_number": record.account.as_str(),
        "name": record.name,
        "greeting": record.greeting,
        "phone": record.phone,
        "email": record.email,
        "phone_verified": record.phone_verified,
        "email_verified": record.email_verified,
        "status": status(record, counters, now),
        "disabled": record.disabled,
        "failed_attempts": counters.failed_attempts,
        "locked_until": locked_until,
        "locked_permanently": counters.locked_permanently,
        "pin_set": record.pin_hash.is_some(),
        "created_at": record.created_at.to_rfc3339(),
        "updated_at": record.updated_at.to_rfc3339(),
    })
}

/// Read a PIN: twice without echo on a terminal (they must match), else one line of stdin.
fn read_pin() -> anyhow::Result<Secret<String>> {
    if std::io::stdin().is_terminal() {
        let first =
            Secret::new(rpassword::prompt_password("PIN: ").context("cannot read the PIN")?);
        let again =
            Secret::new(rpassword::prompt_password("PIN again: ").context("cannot read the PIN")?);
        if first != again {
            bail!("the two PINs differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let pin = Secret::new(line.trim_end_matches(['\n', '\r']).to_owned());
        line.zeroize();
        read.context("cannot read the PIN from standard input")?;
        Ok(pin)
    }
}

/// A row that passed validation, waiting for its PIN to be hashed.
struct ValidRow {
    line: u64,
    account: AccountNumber,
    name: String,
    phone: Option<String>,
    email: Option<String>,
    pin: Option<Secret<String>>,
}

/// Check one record. `seen` maps account numbers already met in the file to their line.
fn validate_row(
    rules: AccountRules,
    line: u64,
    record: &csv::StringRecord,
    seen: &mut HashMap<String, u64>,
) -> Result<ValidRow, Vec<RowProblem>> {
    if record.len() != IMPORT_HEADER.len() {
        return Err(vec![RowProblem::FieldCount(record.len())]);
    }
    let field = |i: usize| record.get(i).unwrap_or_default();
    let mut problems = Vec::new();
    let account = match rules.normalise(field(0)) {
        Ok(n) => match seen.get(n.as_str()) {
            Some(first) => {
                problems.push(RowProblem::DuplicateInFile(*first));
                None
            }
            None => {
                seen.insert(n.as_str().to_owned(), line);
                Some(n)
            }
        },
        Err(_) => {
            problems.push(RowProblem::InvalidAccount);
            None
        }
    };
    let name = field(1).to_owned();
    if let Err(p) = check_name(&name) {
        problems.push(p);
    }
    let phone = non_empty(Some(field(2)));
    if phone.as_deref().is_some_and(|p| !is_e164(p)) {
        problems.push(RowProblem::Phone);
    }
    let email = non_empty(Some(field(3)));
    if email.as_deref().is_some_and(|e| !is_email(e)) {
        problems.push(RowProblem::Email);
    }
    let pin = field(4);
    let pin = if pin.is_empty() {
        None
    } else if check_pin_format(pin).is_ok() {
        Some(Secret::new(pin.to_owned()))
    } else {
        problems.push(RowProblem::Pin);
        None
    };
    match account {
        Some(account) if problems.is_empty() => Ok(ValidRow {
            line,
            account,
            name,
            phone,
            email,
            pin,
        }),
        _ => Err(problems),
    }
}

/// A row's PIN hash (`None`: the row has no PIN), or why it could not be made.
type Hashed = Result<Option<String>, IdentityError>;

/// Hash the PINs of `rows` on up to [`IMPORT_THREADS`] threads, ticking `progress`.
/// The results are in the order of `rows`.
fn hash_rows(
    rows: &[ValidRow],
    params: HashParams,
    progress: &indicatif::ProgressBar,
) -> Vec<Hashed> {
    let next = AtomicUsize::new(0);
    let threads = available_cores()
        .clamp(1, IMPORT_THREADS)
        .min(rows.len().max(1));
    let done: Vec<(usize, Hashed)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(row) = rows.get(i) else { break };
                        let hashed = row.pin.as_ref().map(|p| hash_pin(p, params)).transpose();
                        progress.inc(1);
                        out.push((i, hashed));
                    }
                    out
                })
            })
            .collect();
        // A worker that panicked loses its rows; they are reported as failed below.
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut results: Vec<Option<Hashed>> = (0..rows.len()).map(|_| None).collect();
    for (i, hashed) in done {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(hashed);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(IdentityError::Unavailable("hashing failed".into()))))
        .collect()
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("importing");
    bar
}

/// An import file, read and checked row by row (before any store is opened).
struct ParsedImport {
    /// Data rows, bad ones included.
    rows: u64,
    valid: Vec<ValidRow>,
    /// (line, reason) of every refused row.
    rejected: Vec<(u64, String)>,
}

/// Read `file`: the header must be exactly [`IMPORT_HEADER`]; each row is validated.
fn read_import(file: &std::path::Path, rules: AccountRules) -> anyhow::Result<ParsedImport> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("cannot read the header of {}", file.display()))?;
    if header.iter().ne(IMPORT_HEADER) {
        bail!(
            "{}: the first line must be exactly `{}`",
            file.display(),
            IMPORT_HEADER.join(",")
        );
    }

    let mut parsed = ParsedImport {
        rows: 0,
        valid: Vec::new(),
        rejected: Vec::new(),
    };
    let mut seen = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                parsed.rows += 1;
                let line = record.position().map_or(line, csv::Position::line);
                match validate_row(rules, line, &record, &mut seen) {
                    Ok(row) => parsed.valid.push(row),
                    Err(problems) => parsed.rejected.push((line, join(&problems))),
                }
            }
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                let problem = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => RowProblem::Malformed("not valid UTF-8"),
                    csv::ErrorKind::Io(_) => {
                        bail!("cannot read {} (stopped at line {line})", file.display());
                    }
                    _ => RowProblem::Malformed("unreadable"),
                };
                parsed.rows += 1;
                parsed.rejected.push((line, problem.to_string()));
            }
        }
    }
    record.clear();
    Ok(parsed)
}

/// `account import FILE`: exit 0 if every row was imported, 1 if any was rejected.
async fn import(
    parsed: ParsedImport,
    store: &SqliteStore,
    params: HashParams,
    now: UnixMillis,
) -> anyhow::Result<ExitCode> {
    let ParsedImport {
        rows,
        valid,
        mut rejected,
    } = parsed;
    let progress = progress_bar(rows);
    progress.inc(u64::try_from(rejected.len()).unwrap_or(u64::MAX));

    // Numbers already in the store are rejected before any hashing is spent on them.
    let mut fresh = Vec::with_capacity(valid.len());
    for row in valid {
        if store.get_account(row.account.as_str()).await?.is_some() {
            rejected.push((row.line, RowProblem::AlreadyExists.to_string()));
            progress.inc(1);
        } else {
            fresh.push(row);
        }
    }

    let mut imported = 0u64;
    let mut batches = Vec::new();
    let mut rest = fresh;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(IMPORT_BATCH));
        batches.push(std::mem::replace(&mut rest, tail));
    }
    for batch in batches {
        let bar = progress.clone();
        let (batch, hashes) = tokio::task::spawn_blocking(move || {
            let hashes = hash_rows(&batch, params, &bar);
            (batch, hashes)
        })
        .await
        .context("the hashing threads failed")?;
        let mut records = Vec::with_capacity(batch.len());
        let mut lines = Vec::with_capacity(batch.len());
        for (row, hashed) in batch.into_iter().zip(hashes) {
            match hashed {
                Ok(pin_hash) => {
                    lines.push(row.line);
                    records.push(new_record(
                        row.account,
                        row.name,
                        row.phone,
                        row.email,
                        pin_hash,
                        now,
                    ));
                }
                Err(e) => rejected.push((row.line, RowProblem::Hash(e.to_string()).to_string())),
            }
        }
        let inserted = store
            .import_accounts(&records)
            .await
            .context("cannot store the accounts")?;
        for (line, ok) in lines.into_iter().zip(inserted) {
            if ok {
                imported += 1;
            } else {
                // Added by someone else since the check above.
                rejected.push((line, RowProblem::AlreadyExists.to_string()));
            }
        }
    }
    progress.finish_and_clear();

    rejected.sort();
    audit(
        store,
        EventName::AccountImported,
        "accounts",
        json!({ "imported": imported, "rejected": rejected.len() }),
        now,
    )
    .await?;
    println!("imported {imported}, rejected {}", rejected.len());
    for (line, reason) in &rejected {
        println!("  line {line}: {reason}");
    }
    Ok(if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn join(problems: &[RowProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
