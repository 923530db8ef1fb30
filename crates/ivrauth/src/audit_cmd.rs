//! `ivrauth audit verify`: walk the audit hash chain and report the first broken record.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use ivrauth_core::audit::verify_chain;
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

/// Exit 0 when the chain is intact, 1 when it is broken.
pub async fn run(cmd: AuditCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { .. } => {
            let store = crate::client_cmd::open(settings, false).await?;
            let records = store
                .read_audit()
                .await
                .context("cannot read the audit log")?;
            match verify_chain(&records) {
                Ok(n) => {
                    println!("audit chain intact: {n} records");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("audit chain BROKEN at {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
