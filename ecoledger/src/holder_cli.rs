//! `ecoledger chain sign|balance|bridge-in|retire`: what a token holder's own wallet software
//! does, so the README's walkthrough runs with nothing but curl and this binary. The holder's
//! key comes from `ECOLEDGER_HOLDER_KEY`, never from the command line (where `ps` shows it).

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use chain_bridge::bridge::{resolve_chain, Address, PrivateKeySigner, ResolvedChain};
use chain_bridge::holder;
use domain::{Amount, Currency};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::configuration::{parse_key, ChainSettings, Secret, StoreSettings};
use crate::startup;

/// Token units per CARBON: the token has 3 decimals, the ledger's CARBON scale.
const UNITS_PER_CARBON: u64 = 1_000;

#[derive(Debug, clap::Args)]
pub struct HolderKey {
    /// The holder's private key (hex).
    #[arg(long, env = "ECOLEDGER_HOLDER_KEY", hide_env_values = true)]
    pub holder_key: Secret,
}

impl HolderKey {
    fn signer(&self) -> anyhow::Result<PrivateKeySigner> {
        parse_key(Some(&self.holder_key), "ECOLEDGER_HOLDER_KEY")?.context("set ECOLEDGER_HOLDER_KEY")
    }
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub key: HolderKey,
}

#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
    /// The holder's address.
    pub address: String,
}

#[derive(Debug, clap::Args)]
pub struct BridgeInArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
    #[command(flatten)]
    pub key: HolderKey,
    /// The ledger wallet (a CARBON wallet id) the tokens go back to.
    #[arg(long)]
    pub wallet: Uuid,
    /// CARBON to bridge in, e.g. 1.500.
    #[arg(long)]
    pub amount: String,
}

#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
    #[command(flatten)]
    pub key: HolderKey,
    /// CARBON to retire on the chain.
    #[arg(long)]
    pub amount: String,
    /// The certificate's hash (32 bytes hex) the retirement refers to.
    #[arg(long)]
    pub cert_hash: String,
}

#[derive(Debug, clap::Args)]
pub struct UnpauseArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub chain: ChainSettings,
    /// The contracts' admin (cold) key, hex. DEV ONLY: on the dev chain it is anvil's account 1
    /// (chain_bridge's `DEV_ADMIN_KEY`).
    #[arg(long, env = "ECOLEDGER_ETH_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Secret,
}

/// Reads a message on stdin (a challenge as `GET /api/v1/chain/challenge` answers it, or the
/// bare message) and prints `{"address", "signature"}` (and the challenge's `nonce`), the body
/// `POST /api/v1/chain/addresses` takes.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let signer = args.key.signer()?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("Failed to read the message on stdin")?;
    let (message, nonce) = challenge_message(&input);
    let signature = holder::sign_message(&signer, &message)?;
    let mut body = serde_json::json!({"address": signer.address().to_string().to_lowercase(), "signature": signature});
    if let Some(nonce) = nonce {
        body["nonce"] = serde_json::Value::String(nonce);
    }
    println!("{body}");
    Ok(ExitCode::SUCCESS)
}

/// The message of a challenge and its nonce: its `message` and `nonce` fields when the input
/// is the challenge's JSON, else the input itself.
fn challenge_message(input: &str) -> (String, Option<String>) {
    let text = |value: Option<&serde_json::Value>| value.and_then(serde_json::Value::as_str).map(str::to_string);
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(serde_json::Value::Object(fields)) => match text(fields.get("message")) {
            Some(message) => (message, text(fields.get("nonce"))),
            None => (input.to_string(), None),
        },
        _ => (input.to_string(), None),
    }
}

pub async fn balance(args: BalanceArgs) -> anyhow::Result<ExitCode> {
    let chain = connect(&args.store, &args.chain).await?;
    let holder: Address =
        args.address.trim().parse().map_err(|_| anyhow::anyhow!("not an address: {}", args.address))?;
    let (balance, supply) = holder::balance(&chain.provider, chain.contracts.carbon_token, holder).await?;
    println!("balance {} CARBON ({balance} units)", carbon_of_units(balance)?);
    println!("total_supply {} CARBON ({supply} units)", carbon_of_units(supply)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn bridge_in(args: BridgeInArgs) -> anyhow::Result<ExitCode> {
    let chain = connect(&args.store, &args.chain).await?;
    let units = units_of_carbon(&args.amount)?;
    let tx = holder::bridge_in(chain.url, args.key.signer()?, chain.contracts.carbon_token, units, args.wallet).await?;
    println!("bridged in {} CARBON for wallet {} in transaction {tx}", args.amount, args.wallet);
    Ok(ExitCode::SUCCESS)
}

pub async fn retire(args: RetireArgs) -> anyhow::Result<ExitCode> {
    let chain = connect(&args.store, &args.chain).await?;
    let units = units_of_carbon(&args.amount)?;
    let cert_hash = args.cert_hash.trim().parse().map_err(|_| anyhow::anyhow!("--cert-hash is not 32 bytes of hex"))?;
    let tx = holder::retire(chain.url, args.key.signer()?, chain.contracts.carbon_token, units, cert_hash).await?;
    println!("retired {} CARBON on the chain in transaction {tx}", args.amount);
    Ok(ExitCode::SUCCESS)
}

/// The operator's cold-key step after `POST /api/v1/chain/unpause`: the bridge may pause the
/// token, only the admin key unpauses it.
pub async fn unpause(args: UnpauseArgs) -> anyhow::Result<ExitCode> {
    let chain = connect(&args.store, &args.chain).await?;
    let admin = parse_key(Some(&args.admin_key), "ECOLEDGER_ETH_ADMIN_KEY")?.context("set ECOLEDGER_ETH_ADMIN_KEY")?;
    let tx = holder::unpause(chain.url, admin, chain.contracts.carbon_token).await?;
    println!("unpaused the token {} in transaction {tx}", chain.contracts.carbon_token);
    Ok(ExitCode::SUCCESS)
}

async fn connect(store: &StoreSettings, chain: &ChainSettings) -> anyhow::Result<ResolvedChain> {
    let pool = startup::connect_pool(store).await?;
    startup::migrate(&pool).await?;
    Ok(resolve_chain(&pool, chain.rpc_url()?, chain.contracts()?).await?)
}

/// Token units of a CARBON amount (validated as the ledger validates it: at most 3 decimals).
fn units_of_carbon(text: &str) -> anyhow::Result<alloy::primitives::U256> {
    let amount = Amount::parse(text.trim(), Currency::Carbon).map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
    let units = amount.value() * Decimal::from(UNITS_PER_CARBON);
    let units: u64 = units.trunc().try_into().context("--amount is too large")?;
    Ok(alloy::primitives::U256::from(units))
}

fn carbon_of_units(units: alloy::primitives::U256) -> anyhow::Result<Decimal> {
    let units: u64 = units.try_into().context("more tokens than the ledger can count")?;
    Ok(Decimal::new(i64::try_from(units).context("more tokens than the ledger can count")?, 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carbon_and_token_units_map_exactly() {
        assert_eq!(units_of_carbon("1.5").unwrap(), alloy::primitives::U256::from(1_500u64));
        assert_eq!(carbon_of_units(alloy::primitives::U256::from(1_500u64)).unwrap().to_string(), "1.500");
        assert!(units_of_carbon("0.0001").is_err(), "finer than a token unit");
    }

    #[test]
    fn a_challenge_json_is_signed_by_its_message() {
        assert_eq!(
            challenge_message(r#"{"message":"hello","nonce":"n"}"#),
            ("hello".to_string(), Some("n".to_string()))
        );
        assert_eq!(challenge_message("plain text"), ("plain text".to_string(), None));
    }
}
