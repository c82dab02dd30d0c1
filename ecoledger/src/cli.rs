//! The `ecoledger` subcommands.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use command_api::registration::{self, NewUser};
use domain::user::Role;
use event_store::{Begun, CommandContext};
use uuid::Uuid;

use crate::configuration::{ServeSettings, StoreSettings};
use crate::startup;

#[derive(Debug, Parser)]
#[command(name = "ecoledger", version, about = "Event-sourced ledger for carbon-credit markets")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the outbox relay and the projectors (or a subset: --components).
    Serve(ServeSettings),
    /// Apply pending migrations.
    Migrate(StoreSettings),
    /// Administrative commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Walk every hash chain; exit 1 naming the first bad event.
    Verify(StoreSettings),
    /// Rebuild read models from the event store alone.
    Replay(ReplayArgs),
    /// Benchmarks and fault runs (BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin or auditor; the password is read from stdin.
    Create(AdminCreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct AdminCreateArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub email: String,
    /// `admin` or `auditor`.
    #[arg(long, default_value = "admin")]
    pub role: String,
    /// Succeed without change when the username exists already.
    #[arg(long)]
    pub if_missing: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    /// A projection's name, or `all`.
    #[arg(long, default_value = "all")]
    pub projection: String,
    /// Point in time: replay up to this position into schema `pit_<N>` (or --schema),
    /// leaving the live tables alone.
    #[arg(long)]
    pub to_position: Option<i64>,
    /// Schema for a point-in-time replay.
    #[arg(long, requires = "to_position")]
    pub schema: Option<String>,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(settings) => serve(settings).await,
            Command::Migrate(settings) => {
                let pool = startup::connect_pool(&settings).await?;
                startup::migrate(&pool).await?;
                println!("migrations applied");
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(AdminCommand::Create(args)) => admin_create(args).await,
            Command::Verify(settings) => verify(settings).await,
            Command::Replay(args) => replay(args).await,
            Command::Bench(command) => command.run().await,
        }
    }
}

async fn serve(settings: ServeSettings) -> anyhow::Result<ExitCode> {
    let server = startup::start(&settings).await?;
    println!("ecoledger listening on http://{}", server.address);
    startup::shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_create(args: AdminCreateArgs) -> anyhow::Result<ExitCode> {
    let role: Role = args.role.parse().map_err(|_| anyhow::anyhow!("--role must be admin or auditor"))?;
    if role == Role::User {
        bail!("--role must be admin or auditor; users register over the API");
    }
    registration::validate_username(&args.username).map_err(|e| anyhow::anyhow!(e.detail))?;
    registration::validate_email(&args.email).map_err(|e| anyhow::anyhow!(e.detail))?;
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password).context("Failed to read the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    registration::validate_password(&password).map_err(|e| anyhow::anyhow!(e.detail))?;
    let store = startup::open_store(&args.store).await?;
    startup::migrate(store.pool()).await?;
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM credentials WHERE username_lower = $1")
        .bind(args.username.to_lowercase())
        .fetch_optional(store.pool())
        .await?;
    if let Some(user_id) = existing {
        if args.if_missing {
            println!("user {} exists ({user_id}); nothing to do", args.username);
            return Ok(ExitCode::SUCCESS);
        }
        bail!("username {} is taken", args.username);
    }
    let password_hash = command_api::auth::hash_password(password).await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let user = NewUser {
        user_id: Uuid::new_v4(),
        username: args.username.clone(),
        email: args.email,
        display_name: None,
        password_hash,
        roles: BTreeSet::from([role]),
    };
    let Begun::Fresh(uow) = store.begin(CommandContext::new("cli:admin-create"), None).await? else {
        unreachable!("no idempotency key was given")
    };
    registration::register(*uow, user.clone()).await.map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.detail))?;
    println!("created {} {} ({})", role, args.username, user.user_id);
    Ok(ExitCode::SUCCESS)
}

async fn verify(settings: StoreSettings) -> anyhow::Result<ExitCode> {
    let pool = startup::connect_pool(&settings).await?;
    let report = event_store::verify::verify(&pool).await?;
    println!("{} streams, {} events, {} checkpoints", report.streams, report.events, report.checkpoints);
    match report.first_problem {
        None => {
            println!("ok: every chain verifies");
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("FAILED: {problem}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(chosen) = projections::select(&args.projection) else {
        let names: Vec<_> = projections::all().iter().map(|p| p.name()).collect();
        bail!("unknown projection {:?}; choose one of {} or all", args.projection, names.join(", "));
    };
    let store = startup::open_store(&args.store).await?;
    let report = match args.to_position {
        Some(position) => {
            let schema = args.schema.unwrap_or_else(|| format!("pit_{position}"));
            projections::replay_into_schema(&store, &chosen, &schema, position).await?
        }
        None => projections::rebuild_live(&store, &chosen).await?,
    };
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "replayed {} events up to position {} into schema {} ({}) in {seconds:.2}s ({:.0} events/s)",
        report.events,
        report.position,
        report.schema,
        report.projections.join(", "),
        report.events as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
