//! The `ecoledger` subcommands.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use command_api::registration::{self, NewUser};
use domain::user::Role;
use domain::Currency;
use event_store::{Begun, CommandContext};
use price_ingest::csv_import::ImportTarget;
use uuid::Uuid;

use crate::configuration::{parse_key, ChainSettings, PriceSettings, Secret, ServeSettings, StoreSettings};
use crate::startup;

#[derive(Debug, Parser)]
#[command(name = "ecoledger", version, about = "Event-sourced ledger for carbon-credit markets")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the outbox relay, the projectors, the saga workers and the price ingest
    /// (or a subset: --components).
    Serve(Box<ServeArgs>),
    /// Apply pending migrations.
    Migrate(StoreSettings),
    /// Administrative commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Walk every hash chain; exit 1 naming the first bad event. With --chain, also check the
    /// event store against every anchor on the chain's LedgerAnchor contract.
    Verify(VerifyArgs),
    /// Rebuild read models from the event store alone.
    Replay(ReplayArgs),
    /// Benchmarks and fault runs (BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Market prices: import history from CSV, backfill ETH from CoinGecko, a fake provider.
    #[command(subcommand)]
    Prices(PricesCommand),
    /// The chain bridge's chain: deploy the contracts, show the chain's info.
    #[command(subcommand)]
    Chain(ChainCommand),
}

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Deploy CarbonToken, CarbonStaking and LedgerAnchor at ECOLEDGER_ETH_RPC_URL with
    /// ECOLEDGER_ETH_DEPLOY_KEY (which keeps no role), and print their addresses.
    Deploy(ChainDeployArgs),
    /// The chain's id, contracts, bridge address and pause state (without ECOLEDGER_ETH_RPC_URL:
    /// the dev chain recorded in Postgres, while `ecoledger serve` runs it).
    Info(ChainInfoArgs),
    /// A token holder's tool: sign a link challenge read on stdin with ECOLEDGER_HOLDER_KEY and
    /// print the body of `POST /api/v1/chain/addresses`.
    Sign(crate::holder_cli::SignArgs),
    /// A token holder's tool: an address's CARBON tokens and the total supply.
    Balance(crate::holder_cli::BalanceArgs),
    /// A token holder's tool: bridge tokens back into a ledger wallet (`bridgeIn`).
    BridgeIn(crate::holder_cli::BridgeInArgs),
    /// A token holder's tool: retire tokens on the chain (`retire`).
    Retire(crate::holder_cli::RetireArgs),
    /// The operator's tool: unpause the token with the admin (cold) key from
    /// ECOLEDGER_ETH_ADMIN_KEY, after `POST /api/v1/chain/unpause`.
    Unpause(crate::holder_cli::UnpauseArgs),
}

#[derive(Debug, clap::Args)]
pub struct ChainDeployArgs {
    #[command(flatten)]
    pub chain: ChainSettings,
    /// The deploying key (hex); it pays for the deployment and gets no role.
    #[arg(long, env = "ECOLEDGER_ETH_DEPLOY_KEY", hide_env_values = true)]
    pub deploy_key: Secret,
    /// The cold key's address: the contracts' admin.
    #[arg(long)]
    pub admin: String,
    /// Seconds an admin transfer waits before the new admin may accept it.
    #[arg(long, default_value_t = 2 * 86_400)]
    pub admin_delay_secs: u64,
    /// Token units (0.001 tCO2e) the bridge may mint per UTC day.
    #[arg(long, default_value_t = 1_000_000)]
    pub daily_mint_cap: u64,
    /// Seconds a stake stays locked.
    #[arg(long, default_value_t = 7 * 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub staking_minimum_lock_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct ChainInfoArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    /// Also check every on-chain anchor (the chain from ECOLEDGER_ETH_RPC_URL, or the dev chain
    /// recorded in Postgres).
    #[arg(long)]
    pub chain: bool,
    #[command(flatten)]
    pub chain_settings: ChainSettings,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: ServeSettings,
    #[command(flatten)]
    pub prices: PriceSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
}

#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Record historical prices from a CSV file with the columns Date, Price and Change %
    /// (as Investing.com's historical data); bad rows are reported by line and skipped.
    Import(PricesImportArgs),
    /// Record ETH history from CoinGecko's market chart (ECOLEDGER_COINGECKO_BASE_URL).
    Backfill(PricesBackfillArgs),
    /// DEV ONLY: serve CoinGecko's and OilPriceAPI's endpoints with made-up, slowly moving
    /// prices, for `make run` without internet.
    FakeProvider(FakeProviderArgs),
}

#[derive(Debug, clap::Args)]
pub struct PricesImportArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    pub file: PathBuf,
    /// CARBON or ETH.
    #[arg(long, default_value = "CARBON")]
    pub base: String,
    #[arg(long, default_value = "EUR")]
    pub quote: String,
    /// The market index; default `EUA` for CARBON, none for ETH; `-` for none.
    #[arg(long)]
    pub index: Option<String>,
    /// The source the rows are recorded with.
    #[arg(long, default_value = price_ingest::csv_import::CSV_SOURCE_DEFAULT)]
    pub source: String,
}

#[derive(Debug, clap::Args)]
pub struct PricesBackfillArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub prices: PriceSettings,
    /// Start of the history, RFC 3339.
    #[arg(long)]
    pub from: String,
    /// End of the history, RFC 3339; default now.
    #[arg(long)]
    pub to: Option<String>,
    /// EUR or USD.
    #[arg(long, default_value = "EUR")]
    pub quote: String,
}

#[derive(Debug, clap::Args)]
pub struct FakeProviderArgs {
    #[arg(long, env = "ECOLEDGER_FAKE_PRICES_ADDR", default_value = "127.0.0.1:8091")]
    pub addr: String,
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
            Command::Serve(args) => serve(*args).await,
            Command::Migrate(settings) => {
                let pool = startup::connect_pool(&settings).await?;
                startup::migrate(&pool).await?;
                println!("migrations applied");
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(AdminCommand::Create(args)) => admin_create(args).await,
            Command::Verify(args) => verify(args).await,
            Command::Replay(args) => replay(args).await,
            Command::Bench(command) => command.run().await,
            Command::Prices(PricesCommand::Import(args)) => prices_import(args).await,
            Command::Prices(PricesCommand::Backfill(args)) => prices_backfill(args).await,
            Command::Prices(PricesCommand::FakeProvider(args)) => prices_fake_provider(args).await,
            Command::Chain(ChainCommand::Deploy(args)) => chain_deploy(args).await,
            Command::Chain(ChainCommand::Info(args)) => chain_info(args).await,
            Command::Chain(ChainCommand::Sign(args)) => crate::holder_cli::sign(args),
            Command::Chain(ChainCommand::Balance(args)) => crate::holder_cli::balance(args).await,
            Command::Chain(ChainCommand::BridgeIn(args)) => crate::holder_cli::bridge_in(args).await,
            Command::Chain(ChainCommand::Retire(args)) => crate::holder_cli::retire(args).await,
            Command::Chain(ChainCommand::Unpause(args)) => crate::holder_cli::unpause(args).await,
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let server = startup::start_with_chain(&args.settings, &args.prices, &args.chain).await?;
    println!("ecoledger listening on http://{}", server.address);
    if let Some(bridge) = &server.bridge {
        let identity = &bridge.identity().identity;
        println!("chain {} at {} (token {})", identity.chain_id, bridge.rpc_url(), identity.contracts.carbon_token);
    }
    startup::shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
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
        user_id: domain::new_id(),
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

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let pool = startup::connect_pool(&args.store).await?;
    let report = event_store::verify::verify(&pool).await?;
    println!("{} streams, {} events, {} checkpoints", report.streams, report.events, report.checkpoints);
    let store_ok = match report.first_problem {
        None => {
            println!("ok: every chain verifies");
            true
        }
        Some(problem) => {
            println!("FAILED: {problem}");
            false
        }
    };
    let anchors_ok = match args.chain {
        true => {
            let url = args.chain_settings.rpc_url()?;
            let contracts = args.chain_settings.contracts()?;
            crate::chain_checks::verify_chain(&pool, url, contracts).await? == ExitCode::SUCCESS
        }
        false => true,
    };
    Ok(if store_ok && anchors_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

/// Largest CSV file `prices import` reads.
const IMPORT_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

pub async fn prices_import(args: PricesImportArgs) -> anyhow::Result<ExitCode> {
    let quote: Currency = args.quote.parse().map_err(|_| anyhow::anyhow!("--quote must be EUR, USD, ETH or CARBON"))?;
    let index = match args.index.as_deref() {
        Some("-") => None,
        Some(index) => Some(index.to_string()),
        None if args.base == "CARBON" => Some(price_ingest::providers::oilpriceapi::INDEX.to_string()),
        None => None,
    };
    let size = std::fs::metadata(&args.file).with_context(|| format!("Failed to read {}", args.file.display()))?.len();
    if size > IMPORT_FILE_BYTES_MAX {
        bail!("{} is larger than {IMPORT_FILE_BYTES_MAX} bytes; split it", args.file.display());
    }
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("Failed to read {}", args.file.display()))?;
    let target = ImportTarget { base: args.base, quote, index, source: args.source };
    let store = startup::open_store(&args.store).await?;
    startup::migrate(store.pool()).await?;
    let report = price_ingest::csv_import::import_csv(&store, &text, &target).await?;
    for rejection in &report.rejected {
        println!("line {}: {}", rejection.line, rejection.reason);
    }
    println!(
        "{}: recorded {}, duplicates {}, rejected {}",
        args.file.display(),
        report.recorded,
        report.duplicates,
        report.rejected.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn prices_backfill(args: PricesBackfillArgs) -> anyhow::Result<ExitCode> {
    let time = |text: &str, name: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.to_utc())
            .map_err(|_| anyhow::anyhow!("--{name} must be an RFC 3339 time such as 2026-01-05T00:00:00Z"))
    };
    let from = time(&args.from, "from")?;
    let to = match args.to.as_deref() {
        Some(text) => time(text, "to")?,
        None => Utc::now(),
    };
    let quote: Currency = args.quote.parse().map_err(|_| anyhow::anyhow!("--quote must be EUR or USD"))?;
    let config = args.prices.ingest_config()?;
    let Some(coingecko) = config.coingecko else {
        bail!("set ECOLEDGER_COINGECKO_BASE_URL to backfill from CoinGecko")
    };
    let http = price_ingest::http::Http::new(config.http).context("Failed to build the HTTP client")?;
    let store = startup::open_store(&args.store).await?;
    startup::migrate(store.pool()).await?;
    let tally = price_ingest::backfill::backfill_eth(&store, &http, &coingecko, quote, from, to).await?;
    println!(
        "ETH/{quote} {from} to {to}: recorded {}, duplicates {}, rejected {}",
        tally.recorded, tally.duplicates, tally.rejected
    );
    Ok(ExitCode::SUCCESS)
}

async fn prices_fake_provider(args: FakeProviderArgs) -> anyhow::Result<ExitCode> {
    let listener =
        tokio::net::TcpListener::bind(&args.addr).await.with_context(|| format!("Failed to bind {}", args.addr))?;
    let address = listener.local_addr()?;
    println!("fake price provider listening on http://{address}");
    println!("  ECOLEDGER_COINGECKO_BASE_URL=http://{address}/api/v3");
    println!("  ECOLEDGER_CARBON_PRICE_BASE_URL=http://{address}");
    tokio::select! {
        served = price_ingest::fake::serve(listener) => served.context("The fake provider stopped")?,
        _ = startup::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn chain_deploy(args: ChainDeployArgs) -> anyhow::Result<ExitCode> {
    let Some(url) = args.chain.rpc_url()? else { bail!("set ECOLEDGER_ETH_RPC_URL to the chain to deploy on") };
    let deployer = parse_key(Some(&args.deploy_key), "ECOLEDGER_ETH_DEPLOY_KEY")?
        .ok_or_else(|| anyhow::anyhow!("set ECOLEDGER_ETH_DEPLOY_KEY"))?;
    let bridge = args.chain.signer()?.ok_or_else(|| {
        anyhow::anyhow!("set ECOLEDGER_ETH_SIGNER_KEY: the bridge's hot key gets BRIDGE_ROLE and PAUSER_ROLE")
    })?;
    let admin: chain_bridge::bridge::Address =
        args.admin.trim().parse().map_err(|_| anyhow::anyhow!("--admin is not an address: {}", args.admin))?;
    if admin == bridge.address() || admin == deployer.address() {
        bail!("--admin must be a separate cold key, neither the signer nor the deploy key");
    }
    let config = chain_bridge::DeployConfig {
        admin,
        bridge: bridge.address(),
        pauser: bridge.address(),
        admin_delay_secs: args.admin_delay_secs,
        daily_mint_cap: args.daily_mint_cap.try_into().expect("u64 fits U256"),
        staking_minimum_lock_secs: args.staking_minimum_lock_secs,
    };
    let provider = chain_bridge::bridge::signing_provider(url, deployer);
    let deployment = chain_bridge::deploy(&provider, &config).await.context("Deployment failed")?;
    println!("ECOLEDGER_CARBON_TOKEN_ADDRESS={}", deployment.token);
    println!("ECOLEDGER_STAKING_ADDRESS={}", deployment.staking);
    println!("ECOLEDGER_ANCHOR_ADDRESS={}", deployment.anchor);
    println!("# deployed at block {}; admin {admin}, bridge {}", deployment.first_block, bridge.address());
    Ok(ExitCode::SUCCESS)
}

pub async fn chain_info(args: ChainInfoArgs) -> anyhow::Result<ExitCode> {
    let pool = startup::connect_pool(&args.store).await?;
    startup::migrate(&pool).await?;
    let signer = args.chain.signer()?.map(|signer| signer.address());
    let info = chain_bridge::bridge::read_info(
        &pool,
        args.chain.rpc_url()?,
        args.chain.contracts()?,
        signer,
        args.chain.eth_confirmations,
    )
    .await?;
    println!("chain_id {}", info.chain_id);
    println!("carbon_token {}", info.contracts.carbon_token);
    println!("staking {}", info.contracts.staking);
    println!("anchor {}", info.contracts.anchor);
    match info.bridge_address {
        Some(address) => println!("bridge_address {address}"),
        None => println!("bridge_address unknown (ECOLEDGER_ETH_SIGNER_KEY unset)"),
    }
    match info.confirmations {
        Some(confirmations) => println!("confirmations {confirmations}"),
        None => println!("confirmations finalized"),
    }
    println!("paused {}", info.paused);
    Ok(ExitCode::SUCCESS)
}
