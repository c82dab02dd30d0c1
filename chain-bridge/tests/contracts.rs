//! The contracts on a real anvil, through the same alloy bindings the bridge uses.

mod common;

use alloy::primitives::{aliases::U48, Address, B256, U256};
use alloy::providers::Provider;
use chain_bridge::{uuid_ref, CarbonStaking, CarbonToken, LedgerAnchor};
use common::{mined, refused, Chain, ADMIN_DELAY_SECS, DAILY_MINT_CAP, STAKING_LOCK_SECS};
use uuid::Uuid;

const DAY_SECS: u64 = 86_400;

fn new_ref() -> B256 {
    uuid_ref(Uuid::new_v4())
}

fn units(n: u64) -> U256 {
    U256::from(n)
}

#[tokio::test]
async fn only_the_bridge_key_mints_and_each_ref_mints_once() {
    let c = Chain::start().await;
    let user = c.user().await;
    let bridge_role = c.token_view().BRIDGE_ROLE().call().await.unwrap();
    let r = new_ref();

    for key in [&user, &c.deployer, &c.admin, &c.pauser] {
        let err: CarbonToken::AccessControlUnauthorizedAccount =
            refused(c.token(key).mint(user.address(), units(1_500), r).send().await);
        assert_eq!((err.account, err.neededRole), (key.address(), bridge_role));
    }

    let receipt = mined(c.token(&c.bridge).mint(user.address(), units(1_500), r).send().await).await;
    let minted = receipt.decoded_log::<CarbonToken::Minted>().expect("a Minted log").data;
    assert_eq!(minted, CarbonToken::Minted { r#ref: r, to: user.address(), amount: units(1_500) });
    let transfer = receipt.decoded_log::<CarbonToken::Transfer>().expect("a Transfer log").data;
    assert_eq!((transfer.from, transfer.to, transfer.value), (Address::ZERO, user.address(), units(1_500)));
    assert!(c.token_view().mintedRef(r).call().await.unwrap());
    assert!(!c.token_view().mintedRef(new_ref()).call().await.unwrap());
    assert_eq!(c.balance(user.address()).await, units(1_500));
    assert_eq!(c.total_supply().await, units(1_500));
    assert_eq!(c.token_view().decimals().call().await.unwrap(), 3);

    // A repeat is refused whatever its recipient or amount: the bridge reads it as "done".
    let err: CarbonToken::RefAlreadyMinted =
        refused(c.token(&c.bridge).mint(c.admin.address(), units(7), r).send().await);
    assert_eq!(err.r#ref, r);
    assert_eq!(c.total_supply().await, units(1_500));

    let mut low_bytes_set = r;
    low_bytes_set.0[31] = 1;
    for bad in [B256::ZERO, low_bytes_set] {
        let err: CarbonToken::MalformedRef =
            refused(c.token(&c.bridge).mint(user.address(), units(1), bad).send().await);
        assert_eq!(err.r#ref, bad);
    }
    let _: CarbonToken::ZeroAmount =
        refused(c.token(&c.bridge).mint(user.address(), U256::ZERO, new_ref()).send().await);
}

#[tokio::test]
async fn the_daily_mint_cap_refuses_mints_past_it_until_the_next_utc_day() {
    let c = Chain::start().await;
    let user = c.user().await;
    // Start an hour into a UTC day so the first part of the test cannot straddle midnight.
    let now = c.now().await;
    c.advance_time(DAY_SECS - now % DAY_SECS + 3_600).await;
    let bridge = c.token(&c.bridge);
    let cap = units(DAILY_MINT_CAP);
    assert_eq!(c.token_view().dailyMintCap().call().await.unwrap(), cap);

    mined(bridge.mint(user.address(), cap - units(1), new_ref()).send().await).await;
    let err: CarbonToken::DailyMintCapExceeded = refused(bridge.mint(user.address(), units(2), new_ref()).send().await);
    assert_eq!((err.amount, err.remaining), (units(2), units(1)));
    assert_eq!(c.token_view().mintableToday().call().await.unwrap(), units(1));
    mined(bridge.mint(user.address(), units(1), new_ref()).send().await).await;
    assert_eq!(c.token_view().mintableToday().call().await.unwrap(), U256::ZERO);

    c.advance_time(DAY_SECS).await;
    assert_eq!(c.token_view().mintableToday().call().await.unwrap(), cap);
    mined(bridge.mint(user.address(), units(2), new_ref()).send().await).await;

    let _: CarbonToken::AccessControlUnauthorizedAccount = refused(bridge.setDailyMintCap(units(10)).send().await);
    let receipt = mined(c.token(&c.admin).setDailyMintCap(units(10)).send().await).await;
    let changed = receipt.decoded_log::<CarbonToken::DailyMintCapChanged>().expect("a cap log").data;
    assert_eq!((changed.previousCap, changed.newCap), (cap, units(10)));
    // Today's mints still count against the new cap.
    assert_eq!(c.token_view().mintableToday().call().await.unwrap(), units(8));
    let err: CarbonToken::DailyMintCapExceeded = refused(bridge.mint(user.address(), units(9), new_ref()).send().await);
    assert_eq!(err.remaining, units(8));
    assert_eq!(c.total_supply().await, cap + units(2));
}

#[tokio::test]
async fn the_admin_role_moves_only_through_a_delayed_two_step_transfer() {
    let c = Chain::start().await;
    let new_admin = c.user().await;
    let stranger = c.user().await;
    let token = c.token_view();
    let admin_role = token.DEFAULT_ADMIN_ROLE().call().await.unwrap();
    let bridge_role = token.BRIDGE_ROLE().call().await.unwrap();
    let pauser_role = token.PAUSER_ROLE().call().await.unwrap();

    assert_eq!(token.defaultAdmin().call().await.unwrap(), c.admin.address());
    assert_eq!(token.defaultAdminDelay().call().await.unwrap(), U48::from(ADMIN_DELAY_SECS));
    assert!(token.hasRole(bridge_role, c.bridge.address()).call().await.unwrap());
    assert!(token.hasRole(pauser_role, c.pauser.address()).call().await.unwrap());
    for role in [admin_role, bridge_role, pauser_role] {
        assert!(!token.hasRole(role, c.deployer.address()).call().await.unwrap(), "the deploy key keeps no role");
    }
    let anchor = LedgerAnchor::new(c.deployment.anchor, c.chain.provider().clone());
    assert_eq!(anchor.defaultAdmin().call().await.unwrap(), c.admin.address());
    assert!(anchor.hasRole(bridge_role, c.bridge.address()).call().await.unwrap());

    // The admin role is never granted directly, and only the admin starts a transfer.
    let _: CarbonToken::AccessControlEnforcedDefaultAdminRules =
        refused(c.token(&c.admin).grantRole(admin_role, new_admin.address()).send().await);
    let _: CarbonToken::AccessControlUnauthorizedAccount =
        refused(c.token(&c.bridge).beginDefaultAdminTransfer(c.bridge.address()).send().await);

    mined(c.token(&c.admin).beginDefaultAdminTransfer(new_admin.address()).send().await).await;
    let _: CarbonToken::AccessControlEnforcedDefaultAdminDelay =
        refused(c.token(&new_admin).acceptDefaultAdminTransfer().send().await);
    c.advance_time(ADMIN_DELAY_SECS + 1).await;
    let _: CarbonToken::AccessControlInvalidDefaultAdmin =
        refused(c.token(&stranger).acceptDefaultAdminTransfer().send().await);
    mined(c.token(&new_admin).acceptDefaultAdminTransfer().send().await).await;

    assert_eq!(token.defaultAdmin().call().await.unwrap(), new_admin.address());
    assert!(!token.hasRole(admin_role, c.admin.address()).call().await.unwrap());
    let _: CarbonToken::AccessControlUnauthorizedAccount =
        refused(c.token(&c.admin).setDailyMintCap(units(1)).send().await);
    mined(c.token(&new_admin).setDailyMintCap(units(1)).send().await).await;
}

#[tokio::test]
async fn key_rotation_grants_the_new_bridge_key_then_revokes_the_old_one() {
    let c = Chain::start().await;
    let user = c.user().await;
    let new_bridge = c.user().await;
    let bridge_role = c.token_view().BRIDGE_ROLE().call().await.unwrap();

    let _: CarbonToken::AccessControlUnauthorizedAccount =
        refused(c.token(&c.bridge).grantRole(bridge_role, new_bridge.address()).send().await);
    mined(c.token(&c.admin).grantRole(bridge_role, new_bridge.address()).send().await).await;
    mined(c.token(&new_bridge).mint(user.address(), units(5), new_ref()).send().await).await;
    mined(c.token(&c.bridge).mint(user.address(), units(5), new_ref()).send().await).await;

    mined(c.token(&c.admin).revokeRole(bridge_role, c.bridge.address()).send().await).await;
    let _: CarbonToken::AccessControlUnauthorizedAccount =
        refused(c.token(&c.bridge).mint(user.address(), units(5), new_ref()).send().await);
    mined(c.token(&new_bridge).mint(user.address(), units(5), new_ref()).send().await).await;
    assert_eq!(c.balance(user.address()).await, units(15));
}

#[tokio::test]
async fn pausing_stops_every_movement_until_the_admin_unpauses() {
    let c = Chain::start().await;
    let user = c.user().await;
    let other = c.user().await;
    mined(c.token(&c.bridge).mint(user.address(), units(100), new_ref()).send().await).await;

    let _: CarbonToken::AccessControlUnauthorizedAccount = refused(c.token(&user).pause().send().await);
    let _: CarbonToken::AccessControlUnauthorizedAccount = refused(c.token(&c.bridge).pause().send().await);
    let receipt = mined(c.token(&c.pauser).pause().send().await).await;
    assert_eq!(receipt.decoded_log::<CarbonToken::Paused>().expect("a Paused log").data.account, c.pauser.address());
    assert!(c.token_view().paused().call().await.unwrap());

    let _: CarbonToken::EnforcedPause =
        refused(c.token(&c.bridge).mint(user.address(), units(1), new_ref()).send().await);
    let _: CarbonToken::EnforcedPause = refused(c.token(&user).transfer(other.address(), units(1)).send().await);
    let _: CarbonToken::EnforcedPause = refused(c.token(&user).bridgeIn(units(1), new_ref()).send().await);
    let _: CarbonToken::EnforcedPause = refused(c.token(&user).retire(units(1), B256::repeat_byte(7)).send().await);
    let _: CarbonToken::EnforcedPause =
        refused(c.token(&c.bridge).recordRetirement(new_ref(), units(1), B256::repeat_byte(7)).send().await);

    // A leaked hot key can stop the token but never reopen it.
    let _: CarbonToken::AccessControlUnauthorizedAccount = refused(c.token(&c.pauser).unpause().send().await);
    mined(c.token(&c.admin).unpause().send().await).await;
    mined(c.token(&user).transfer(other.address(), units(1)).send().await).await;
    assert_eq!(c.balance(other.address()).await, units(1));
}

#[tokio::test]
async fn bridge_in_and_retire_burn_the_holders_tokens() {
    let c = Chain::start().await;
    let user = c.user().await;
    mined(c.token(&c.bridge).mint(user.address(), units(1_000), new_ref()).send().await).await;
    let wallet = new_ref();

    let receipt = mined(c.token(&user).bridgeIn(units(300), wallet).send().await).await;
    let bridged = receipt.decoded_log::<CarbonToken::BridgedIn>().expect("a BridgedIn log").data;
    assert_eq!(bridged, CarbonToken::BridgedIn { from: user.address(), accountRef: wallet, amount: units(300) });
    let burn = receipt.decoded_log::<CarbonToken::Transfer>().expect("a Transfer log").data;
    assert_eq!((burn.from, burn.to, burn.value), (user.address(), Address::ZERO, units(300)));
    assert_eq!(c.total_supply().await, units(700));

    let cert = B256::repeat_byte(0xc5);
    let receipt = mined(c.token(&user).retire(units(200), cert).send().await).await;
    let retired = receipt.decoded_log::<CarbonToken::Retired>().expect("a Retired log").data;
    assert_eq!(retired, CarbonToken::Retired { holder: user.address(), certHash: cert, amount: units(200) });
    assert_eq!(c.total_supply().await, units(500));
    assert_eq!(c.balance(user.address()).await, units(500));

    let err: CarbonToken::ERC20InsufficientBalance = refused(c.token(&user).bridgeIn(units(501), wallet).send().await);
    assert_eq!((err.balance, err.needed), (units(500), units(501)));
    let _: CarbonToken::MalformedRef = refused(c.token(&user).bridgeIn(units(1), B256::repeat_byte(1)).send().await);
    let _: CarbonToken::ZeroAmount = refused(c.token(&user).retire(U256::ZERO, cert).send().await);
    let _: CarbonToken::ZeroAmount = refused(c.token(&user).bridgeIn(U256::ZERO, wallet).send().await);
}

#[tokio::test]
async fn record_retirement_is_once_per_id_and_leaves_the_supply_unchanged() {
    let c = Chain::start().await;
    let user = c.user().await;
    mined(c.token(&c.bridge).mint(user.address(), units(1_000), new_ref()).send().await).await;
    let (id, cert) = (new_ref(), B256::repeat_byte(0xab));

    let _: CarbonToken::AccessControlUnauthorizedAccount =
        refused(c.token(&user).recordRetirement(id, units(250), cert).send().await);
    let receipt = mined(c.token(&c.bridge).recordRetirement(id, units(250), cert).send().await).await;
    let recorded = receipt.decoded_log::<CarbonToken::RetirementRecorded>().expect("a RetirementRecorded log").data;
    assert_eq!(recorded, CarbonToken::RetirementRecorded { id, certHash: cert, amount: units(250) });
    assert!(receipt.decoded_log::<CarbonToken::Transfer>().is_none(), "no token moves");
    assert_eq!(c.total_supply().await, units(1_000));
    let stored = c.token_view().recordedRetirements(id).call().await.unwrap();
    assert_eq!((stored.amount, stored.certHash), (units(250), cert));

    let err: CarbonToken::RetirementAlreadyRecorded =
        refused(c.token(&c.bridge).recordRetirement(id, units(1), B256::repeat_byte(1)).send().await);
    assert_eq!(err.id, id);
    let _: CarbonToken::ZeroCertHash =
        refused(c.token(&c.bridge).recordRetirement(new_ref(), units(1), B256::ZERO).send().await);
    let _: CarbonToken::ZeroAmount =
        refused(c.token(&c.bridge).recordRetirement(new_ref(), U256::ZERO, cert).send().await);
    let _: CarbonToken::MalformedRef =
        refused(c.token(&c.bridge).recordRetirement(B256::repeat_byte(2), units(1), cert).send().await);
    assert_eq!(c.total_supply().await, units(1_000));
}

#[tokio::test]
async fn a_stake_stays_locked_for_the_minimum_lock() {
    let c = Chain::start().await;
    let user = c.user().await;
    let staking = c.staking(&user);
    mined(c.token(&c.bridge).mint(user.address(), units(1_000), new_ref()).send().await).await;
    mined(c.token(&user).approve(c.deployment.staking, units(1_000)).send().await).await;
    assert_eq!(staking.minimumLock().call().await.unwrap(), STAKING_LOCK_SECS);

    let receipt = mined(staking.stake(units(600)).send().await).await;
    let staked = receipt.decoded_log::<CarbonStaking::Staked>().expect("a Staked log").data;
    let stake_block = c.chain.provider().get_block_by_hash(receipt.block_hash.unwrap()).await.unwrap();
    let stake_time = stake_block.expect("the stake's block").header.timestamp;
    assert_eq!(
        staked,
        CarbonStaking::Staked {
            holder: user.address(),
            amount: units(600),
            total: units(600),
            unlockAt: stake_time + STAKING_LOCK_SECS
        }
    );
    assert_eq!(c.balance(user.address()).await, units(400));
    assert_eq!(c.balance(c.deployment.staking).await, units(600));
    assert_eq!(staking.totalStaked().call().await.unwrap(), units(600));

    let err: CarbonStaking::StakeLocked = refused(staking.unstake(units(100)).send().await);
    assert_eq!(err.unlockAt, stake_time + STAKING_LOCK_SECS);
    c.advance_time(STAKING_LOCK_SECS - 60).await;
    let _: CarbonStaking::StakeLocked = refused(staking.unstake(units(100)).send().await);

    c.advance_time(120).await;
    let receipt = mined(staking.unstake(units(100)).send().await).await;
    let unstaked = receipt.decoded_log::<CarbonStaking::Unstaked>().expect("an Unstaked log").data;
    assert_eq!((unstaked.amount, unstaked.remaining), (units(100), units(500)));
    assert_eq!(c.balance(user.address()).await, units(500));
    let err: CarbonStaking::InsufficientStake = refused(staking.unstake(units(501)).send().await);
    assert_eq!((err.requested, err.staked), (units(501), units(500)));
    let _: CarbonStaking::ZeroAmount = refused(staking.unstake(U256::ZERO).send().await);

    // Staking more locks the whole stake again.
    mined(staking.stake(units(1)).send().await).await;
    let _: CarbonStaking::StakeLocked = refused(staking.unstake(units(1)).send().await);
    let stake = staking.stakes(user.address()).call().await.unwrap();
    assert_eq!(stake.amount, units(501));
    assert_eq!(c.balance(c.deployment.staking).await, units(501));
}

#[tokio::test]
async fn anchors_only_move_forward_and_only_by_the_bridge_key() {
    let c = Chain::start().await;
    let user = c.user().await;
    let anchor = c.anchor(&c.bridge);
    let (h1, h2) = (B256::repeat_byte(0x11), B256::repeat_byte(0x22));

    let _: LedgerAnchor::AccessControlUnauthorizedAccount = refused(c.anchor(&user).anchor(100, h1, 90).send().await);
    let _: LedgerAnchor::AccessControlUnauthorizedAccount =
        refused(c.anchor(&c.admin).anchor(100, h1, 90).send().await);
    let _: LedgerAnchor::PositionNotIncreasing = refused(anchor.anchor(0, h1, 1).send().await);

    let receipt = mined(anchor.anchor(100, h1, 90).send().await).await;
    let anchored = receipt.decoded_log::<LedgerAnchor::Anchored>().expect("an Anchored log").data;
    assert_eq!(anchored, LedgerAnchor::Anchored { position: 100, headHash: h1, count: 90 });
    let stored = anchor.anchors(100).call().await.unwrap();
    assert_eq!((stored.headHash, stored.count, stored.blockNumber), (h1, 90, receipt.block_number.unwrap()));
    assert_eq!(anchor.latestPosition().call().await.unwrap(), 100);

    for position in [100, 99, 1] {
        let err: LedgerAnchor::PositionNotIncreasing = refused(anchor.anchor(position, h2, 95).send().await);
        assert_eq!((err.position, err.latest), (position, 100));
    }
    let _: LedgerAnchor::EmptyAnchor = refused(anchor.anchor(101, B256::ZERO, 95).send().await);
    let _: LedgerAnchor::EmptyAnchor = refused(anchor.anchor(101, h2, 0).send().await);

    mined(anchor.anchor(150, h2, 130).send().await).await;
    assert_eq!(anchor.latestPosition().call().await.unwrap(), 150);
    assert_eq!(anchor.anchorCount().call().await.unwrap(), 2);
}

#[tokio::test]
async fn a_refused_transaction_does_not_hold_up_the_next_one_from_the_same_provider() {
    let c = Chain::start().await;
    let anchor = c.anchor(&c.bridge);
    let hash = B256::repeat_byte(0x33);
    for _ in 0..3 {
        let _: LedgerAnchor::EmptyAnchor = refused(anchor.anchor(1, hash, 0).send().await);
    }
    mined(anchor.anchor(1, hash, 1).send().await).await;
}
