//! `vouchmail admin token create|list|revoke`: the bearer tokens of the admin API (SPEC
//! 12). A token is printed once, at creation; the store keeps only its hash.

use clap::Subcommand;
use vouchmail_server::rules::admin_tokens::{create_token, revoke_token};
use vouchmail_store::Store;

use crate::error::CliError;
use crate::listing::Listing;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Bearer tokens of the admin API and web console.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown).
    Create {
        /// A name for logs and `token list` (letters, digits, '.', '_', '-').
        name: String,
    },
    /// The tokens: name, when made, when revoked.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it get 403 from now on.
    Revoke {
        /// The token's name, as `token list` shows it.
        name: String,
    },
}

pub async fn admin(store: &dyn Store, command: AdminCommand) -> Result<(), CliError> {
    let AdminCommand::Token(command) = command;
    match command {
        TokenCommand::Create { name } => {
            let token = create_token(store, &name).await?;
            println!("{token}");
            eprintln!("token {name} made; it is shown only now: keep it where the API's clients read it");
        }
        TokenCommand::List { json } => {
            let mut listing = Listing::new(&["NAME", "CREATED", "REVOKED"]);
            for token in store.admin_tokens().await? {
                let when = crate::admin::time_text;
                let revoked = token.revoked_at.map(when);
                let object = serde_json::json!({
                    "name": token.name,
                    "created": when(token.created_at),
                    "revoked": revoked,
                });
                listing.push(vec![token.name, when(token.created_at), revoked.unwrap_or_else(|| "-".into())], object);
            }
            listing.print(json)?;
        }
        TokenCommand::Revoke { name } => {
            revoke_token(store, &name).await?;
            println!("token {name} revoked");
        }
    }
    Ok(())
}
