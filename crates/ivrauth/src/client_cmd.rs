//! `ivrauth client create|list|revoke|rotate-secret`: manage API clients in the store.
//!
//! Secrets are printed exactly once, when minted, and stored only as hashes. Every change is
//! audited with the actor `cli`. Every command closes the store before it returns, so its
//! writes are checkpointed into `ivrauth.db` (a copy of that file alone then has them).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use serde_json::json;

use ivrauth_connect::SystemClock;
use ivrauth_core::audit::{AuditEvent, EventName, Outcome};
use ivrauth_core::clients::{hash_credential, known_scopes, parse_scopes};
use ivrauth_core::ports::{AuditStore as _, ClientRecord, ClientStore as _};
use ivrauth_core::time::{Clock as _, UnixMillis};
use ivrauth_store::SqliteStore;

use crate::config::Settings;
use crate::table::Table;
use crate::{DataDirArg, ListArgs};

/// Audit actor of administration commands.
const ACTOR: &str = "cli";

/// Characters of minted client ids.
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its id and secret (the secret is shown only this once)
    Create {
        /// A name to recognise the client by
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: flow:read, flow:write, flow:simulate (or flow:manage for
        /// all three), call:turn, identity:simulate
        #[arg(long, value_name = "SCOPES")]
        scopes: String,
        /// Print one JSON line {"client_id": ..., "client_secret": ...}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List clients (never their secrets)
    List(ListArgs),
    /// Revoke a client and every token issued to it
    Revoke {
        /// Client id
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Mint a new secret; the old one keeps working for the configured overlap
    /// ([auth] secret_rotation_overlap_secs)
    ///
    /// Refused while the overlap of a previous rotation runs (the secret it keeps working
    /// would stop at once), unless --force is given.
    RotateSecret {
        /// Client id
        id: String,
        /// Print one JSON line {"client_id": ..., "client_secret": ..., "previous_valid_until": ...}
        #[arg(long)]
        json: bool,
        /// Rotate even during the overlap of a previous rotation: the secret that rotation
        /// replaced stops working at once
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
}

impl ClientCommand {
    pub fn data_dir(&self) -> &Option<PathBuf> {
        match self {
            ClientCommand::Create { data, .. }
            | ClientCommand::List(ListArgs { data, .. })
            | ClientCommand::Revoke { data, .. }
            | ClientCommand::RotateSecret { data, .. } => &data.data_dir,
        }
    }
}

pub async fn run(cmd: ClientCommand, settings: &Settings) -> anyhow::Result<()> {
    // Arguments are checked before the store is opened (and, for `create`, made).
    if let ClientCommand::Create { name, scopes, .. } = &cmd {
        check_create(name, scopes)?;
    }
    let create = matches!(cmd, ClientCommand::Create { .. });
    let store = open(settings, create).await?;
    let result = execute(cmd, &store, settings).await;
    close(&store, &settings.server.data_dir).await;
    result
}

/// The trimmed name and the scopes of `client create`, or why they are refused.
fn check_create(name: &str, scopes: &str) -> anyhow::Result<(String, Vec<String>)> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 200 characters without control characters");
    }
    let known = known_scopes().collect::<Vec<_>>().join(", ");
    let scopes = parse_scopes(scopes)
        .map_err(|bad| anyhow::anyhow!("unknown scope {bad:?} (known: {known})"))?;
    if scopes.is_empty() {
        bail!("--scopes needs at least one of {known}");
    }
    Ok((name, scopes))
}

async fn execute(
    cmd: ClientCommand,
    store: &SqliteStore,
    settings: &Settings,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        ClientCommand::Create {
            name, scopes, json, ..
        } => {
            let (name, scopes) = check_create(&name, &scopes)?;
            let id = mint_client_id();
            let secret = ivrauth_server::http::auth::mint_token();
            let record = ClientRecord {
                id: id.clone(),
                name: name.clone(),
                scopes: scopes.clone(),
                secret_hash: hash_credential(&secret),
                previous_secret_hash: None,
                previous_valid_until: None,
                created_at: now,
                revoked_at: None,
            };
            store
                .create_client(&record)
                .await
                .context("cannot store the client")?;
            audit(
                store,
                EventName::ClientCreated,
                &id,
                json!({ "name": name, "scopes": scopes }),
                now,
            )
            .await?;
            if json {
                println!("{}", json!({ "client_id": id, "client_secret": secret }));
            } else {
                println!("client_id:     {id}");
                println!("client_secret: {secret}");
                println!("scopes:        {}", scopes.join(" "));
            }
            eprintln!("warning: store the client secret now; it is not shown again.");
        }
        ClientCommand::List(ListArgs { json, .. }) => {
            let clients = store.list_clients().await.context("cannot list clients")?;
            if json {
                let rows: Vec<_> = clients
                    .iter()
                    .map(|c| {
                        json!({
                            "client_id": c.id,
                            "name": c.name,
                            "scopes": c.scopes,
                            "created_at": c.created_at.to_rfc3339(),
                            "revoked_at": c.revoked_at.map(UnixMillis::to_rfc3339),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if clients.is_empty() {
                println!("no clients");
            } else {
                let mut table = Table::new(&["ID", "NAME", "SCOPES", "CREATED", "REVOKED"], &[]);
                for c in &clients {
                    table.row([
                        c.id.clone(),
                        c.name.clone(),
                        c.scopes.join(","),
                        c.created_at.to_rfc3339(),
                        c.revoked_at
                            .map_or_else(|| "-".to_owned(), UnixMillis::to_rfc3339),
                    ]);
                }
                table.write(&mut std::io::stdout().lock())?;
            }
        }
        ClientCommand::Revoke { id, .. } => {
            let Some(client) = store.get_client(&id).await? else {
                bail!("no client with id {id:?}");
            };
            if client.revoked_at.is_some() {
                println!("client {id} was already revoked");
                return Ok(());
            }
            if !store
                .revoke_client(&id, now)
                .await
                .context("cannot revoke the client")?
            {
                bail!("client {id} could not be revoked (revoked meanwhile?)");
            }
            audit(store, EventName::ClientRevoked, &id, json!({}), now).await?;
            println!("client {id} revoked; its tokens no longer work");
        }
        ClientCommand::RotateSecret {
            id, json, force, ..
        } => {
            let Some(client) = store.get_client(&id).await? else {
                bail!("no client with id {id:?}");
            };
            if client.revoked_at.is_some() {
                bail!("client {id} is revoked");
            }
            if let Some(ends) = running_overlap(&client, now) {
                if !force {
                    bail!(
                        "client {id} is within the overlap of its previous rotation: the secret \
                         that rotation replaced keeps working until {}. Rotating again now would \
                         stop that secret at once. Retry after {}, or pass --force to rotate anyway.",
                        ends.to_rfc3339(),
                        ends.to_rfc3339()
                    );
                }
                eprintln!(
                    "warning: --force: the secret replaced by the previous rotation (valid until {}) stops working now",
                    ends.to_rfc3339()
                );
            }
            let secret = ivrauth_server::http::auth::mint_token();
            let overlap =
                i64::try_from(settings.auth.secret_rotation_overlap_secs).unwrap_or(i64::MAX);
            let until = now.plus_secs(overlap);
            if !store
                .rotate_client_secret(&id, &hash_credential(&secret), until)
                .await?
            {
                bail!("no client with id {id:?}");
            }
            audit(
                store,
                EventName::ClientSecretRotated,
                &id,
                json!({ "previous_valid_until": until.to_rfc3339(), "forced": force }),
                now,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    json!({ "client_id": id, "client_secret": secret, "previous_valid_until": until.to_rfc3339() })
                );
            } else {
                println!("client_id:     {id}");
                println!("client_secret: {secret}");
                if until > now {
                    println!(
                        "the previous secret stops working at {}",
                        until.to_rfc3339()
                    );
                } else {
                    println!("the previous secret no longer works");
                }
            }
            eprintln!("warning: store the new client secret now; it is not shown again.");
        }
    }
    Ok(())
}

/// When the secret replaced by the client's last rotation still works: the end of that
/// overlap, if it is still to come.
fn running_overlap(client: &ClientRecord, now: UnixMillis) -> Option<UnixMillis> {
    match (&client.previous_secret_hash, client.previous_valid_until) {
        (Some(_), Some(until)) if until > now => Some(until),
        _ => None,
    }
}

/// Close the store before a command returns: `SqliteStore::close` checkpoints the WAL into
/// `ivrauth.db`, so a copy of `ivrauth.db` alone holds every write.
pub async fn close(store: &SqliteStore, _data_dir: &Path) {
    store.close().await;
}

/// Open the store; unless `create`, the database must already exist (a typo in
/// `--data-dir` should not silently make an empty one). Callers [`close`] it before they
/// return.
pub async fn open(settings: &Settings, create: bool) -> anyhow::Result<SqliteStore> {
    let dir = &settings.server.data_dir;
    if !create && !ivrauth_store::database_path(dir).is_file() {
        bail!(
            "no ivrauth database in {} (check --data-dir)",
            dir.display()
        );
    }
    SqliteStore::open(dir)
        .await
        .with_context(|| format!("cannot open the store in {}", dir.display()))
}

/// Append an audit record for a CLI action (actor `cli`).
pub(crate) async fn audit(
    store: &SqliteStore,
    event: EventName,
    subject: &str,
    detail: serde_json::Value,
    now: UnixMillis,
) -> anyhow::Result<()> {
    let ev = AuditEvent::new(
        uuid::Uuid::new_v4().to_string(),
        event,
        Outcome::Success,
        ACTOR,
        subject,
        None,
        detail,
    );
    store
        .append_audit(&ev, now)
        .await
        .context("cannot write the audit record")?;
    Ok(())
}

/// `cli_` and 16 random characters of `[A-Za-z0-9_-]`.
fn mint_client_id() -> String {
    let mut rng = rand::rngs::OsRng;
    let suffix: String = (0..16)
        .map(|_| char::from(ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())]))
        .collect();
    format!("cli_{suffix}")
}
