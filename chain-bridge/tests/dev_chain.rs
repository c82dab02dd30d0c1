//! The dev chain: anvil from the npm package on a free port, its state kept across restarts.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::Provider;
use chain_bridge::{deploy, DeployConfig, DevChain, DevChainConfig, EVM_VERSION};

/// Generous: a block every 200 ms should show several within this.
const BLOCKS_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_dev_chain_runs_the_hardfork_the_contracts_are_compiled_for() {
    let dir = tempfile::tempdir().unwrap();
    let chain = DevChain::start(DevChainConfig::new(dir.path())).await.unwrap();
    let info = chain.provider().anvil_node_info().await.unwrap();
    assert!(
        info.hard_fork.eq_ignore_ascii_case(EVM_VERSION),
        "anvil runs {}, contracts target {EVM_VERSION}",
        info.hard_fork
    );
    assert_eq!(chain.rpc_url().host_str(), Some("127.0.0.1"));
    assert_ne!(chain.rpc_url().port(), Some(0));
}

#[tokio::test]
async fn with_a_block_time_the_dev_chain_mines_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevChainConfig::new(dir.path()).block_time(Duration::from_millis(200));
    let chain = DevChain::start(config).await.unwrap();
    let first = chain.provider().get_block_number().await.unwrap();
    let deadline = Instant::now() + BLOCKS_DEADLINE;
    loop {
        if chain.provider().get_block_number().await.unwrap() >= first + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no new blocks within {BLOCKS_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_dev_chain_keeps_its_state_across_a_restart_and_stops_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let chain = DevChain::start(DevChainConfig::new(dir.path())).await.unwrap();
    let deployer = chain.funded_key().await.unwrap();
    let key = chain.funded_key().await.unwrap();
    let config = DeployConfig {
        admin: key.address(),
        bridge: key.address(),
        pauser: key.address(),
        admin_delay_secs: 0,
        daily_mint_cap: U256::from(1u64),
        staking_minimum_lock_secs: 1,
    };
    let deployment = deploy(&chain.provider_with(deployer), &config).await.unwrap();
    let code = chain.provider().get_code_at(deployment.token).await.unwrap();
    assert!(!code.is_empty());
    let block = chain.provider().get_block_number().await.unwrap();
    let chain_id = chain.provider().get_chain_id().await.unwrap();
    let old_url = chain.rpc_url().clone();
    chain.stop();

    let probe = alloy::providers::ProviderBuilder::new().connect_http(old_url);
    assert!(probe.get_chain_id().await.is_err(), "anvil still answers after stop");

    let chain = DevChain::start(DevChainConfig::new(dir.path())).await.unwrap();
    assert_eq!(chain.provider().get_chain_id().await.unwrap(), chain_id);
    assert!(chain.provider().get_block_number().await.unwrap() >= block);
    assert_eq!(chain.provider().get_code_at(deployment.token).await.unwrap(), code);
    assert!(chain.provider().get_code_at(deployment.anchor).await.unwrap().len() > 2);
}
