//! `ivrauth audit verify`: walk the audit hash chain and report the first broken record
//! (and how many records before it are intact).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use ivrauth_core::audit::{verify_chain, AuditRecord, ChainError};
use ivrauth_core::ports::AuditStore as _;

use crate::config::Settings;
use crate::DataDirArg;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check that no audit record was edited, deleted, inserted or reordered
    Verify {
        #[command(flatten)]
        data: DataDirArg,
    },
}

impl AuditCommand {
    pub fn data_dir(&self) -> &Option<PathBuf> {
        match self {
            AuditCommand::Verify { data } => &data.data_dir,
        }
    }
}

/// Exit 0 when the chain is intact, 1 when it is broken. On a broken chain stdout says how
/// many records before the break are intact and stderr names the first broken record.
pub async fn run(cmd: AuditCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { .. } => {
            let store = crate::client_cmd::open(settings, false).await?;
            let records = store.read_audit().await;
            crate::client_cmd::close(&store, &settings.server.data_dir).await;
            let records = records.context("cannot read the audit log")?;
            match verify_chain(&records) {
                Ok(n) => {
                    println!("audit chain intact: {n} records");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let intact = intact_before(&records, &e);
                    println!(
                        "audit chain: {intact} record{} intact before the break",
                        if intact == 1 { "" } else { "s" }
                    );
                    eprintln!("error: audit chain BROKEN at {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// How many records precede the first broken one (all of them verified).
fn intact_before(records: &[AuditRecord], e: &ChainError) -> usize {
    let (seq, id) = match e {
        ChainError::HashMismatch { seq, id } | ChainError::BrokenLink { seq, id } => (*seq, id),
    };
    records
        .iter()
        .position(|r| r.seq == seq && &r.id == id)
        .unwrap_or(0)
}
