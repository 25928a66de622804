//! The command line (DESIGN §3). Every subcommand takes `--config FILE`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// byok: bring-your-own-key video generation jobs.
#[derive(Debug, Parser)]
#[command(name = "byok", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./byok.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Api,
    /// Apply database migrations.
    Migrate,
    /// Manage the credential encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage producer API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

impl Command {
    /// Long-running commands log at info; one-shot tools only warn.
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Api)
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh 256-bit key as 64 hex characters.
    Generate,
    /// Re-seal every stored credential under the primary key (online, idempotent).
    Rewrap,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the secret is printed once, alone on the first line.
    Create(CreateToken),
    /// List tokens (never their secrets).
    List(ListTokens),
    /// Revoke a token by id.
    Revoke(RevokeToken),
}

#[derive(Debug, Args)]
pub struct CreateToken {
    /// A name for the token, e.g. the producer that will use it.
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ListTokens {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeToken {
    /// The token's id (from `byok token list`).
    pub id: Uuid,
}
