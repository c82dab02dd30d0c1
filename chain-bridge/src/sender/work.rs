//! The pieces of work the sender sends and settles: mints for withdrawals (completed or, after
//! an admin's cancel and only when provably never minted, credited back), `recordRetirement`
//! for retirements, anchors of global-chain checkpoints, and `pause`.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::{SolCall, SolEvent};
use domain::retirement::Certificate;
use domain::wallet::{Wallet, WalletCommand, WalletEvent};
use event_store::{Begun, CommandContext, Outcome, RecordedEvent, Store};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use sqlx::Arguments;
use uuid::Uuid;

use super::store::{self, Kind, Mined, OpenTx, QueueUpdate};
use super::{Sender, SenderError, WORK_PER_ROUND_MAX};
use crate::contracts::{uuid_ref, CarbonToken, LedgerAnchor};

/// Namespace of the sender's command ids: UUIDv5(namespace, "<kind>/<subject>").
const SENDER_COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_0e2a_40c3_4f57_9a0e_3c55_8d21_7e94);
/// The actor on the sender's events.
const ACTOR: &str = "chain-bridge";
/// Blocks per `eth_getLogs` query when looking for one log (public nodes refuse wide ranges).
const LOG_RANGE_BLOCKS_MAX: u64 = 5_000;
/// Token units per CARBON: the token has 3 decimals, the ledger's CARBON scale.
const UNITS_PER_CARBON: u64 = 1_000;

/// The token units of a CARBON amount (exact: the ledger's scale is the token's).
pub fn token_units(amount: Decimal) -> Result<U256, SenderError> {
    let units = amount * Decimal::from(UNITS_PER_CARBON);
    if units.fract() != Decimal::ZERO || units <= Decimal::ZERO {
        return Err(SenderError::Invalid(format!("{amount} CARBON is not a whole number of token units")));
    }
    let units = units.to_u128().ok_or_else(|| SenderError::Invalid(format!("{amount} CARBON is too large")))?;
    Ok(U256::from(units))
}

/// `0x`-prefixed lower-case hex, as the ledger's events carry chain hashes.
fn hex0x(hash: B256) -> String {
    format!("{hash:#x}")
}

fn context(kind: &str, subject: &str) -> CommandContext {
    let command_id = Uuid::new_v5(&SENDER_COMMAND_NAMESPACE, format!("{kind}/{subject}").as_bytes());
    CommandContext { command_id, correlation_id: command_id, ..CommandContext::new(ACTOR) }
}

/// The certificate of a retirement: its words from `retirement_details`, its ledger facts
/// from its `CreditsRetired` event. `None` while either is missing.
pub async fn certificate(store: &Store, retirement_id: Uuid) -> Result<Option<Certificate>, SenderError> {
    let pool = store.pool();
    let details = sqlx::query_as::<_, (Uuid, String, String, Option<String>, Option<String>)>(
        "SELECT wallet_id, beneficiary, reason, consumption_period, country FROM retirement_details \
         WHERE retirement_id = $1",
    )
    .bind(retirement_id)
    .fetch_optional(pool)
    .await?;
    let Some((wallet_id, beneficiary, reason, consumption_period, country)) = details else { return Ok(None) };
    let rows = sqlx::query_as::<_, (String, Vec<u8>)>(
        "SELECT canonical, hash FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 \
         AND event_type = 'CreditsRetired' ORDER BY sequence",
    )
    .bind(wallet_id.to_string())
    .fetch_all(pool)
    .await?;
    for (canonical, hash) in rows {
        let event = RecordedEvent::from_canonical(&canonical).map_err(|e| SenderError::Invalid(e.to_string()))?;
        let decoded = event_store::store::decode_event::<Wallet>(&event)?;
        let WalletEvent::CreditsRetired { retirement_id: retired, amount, .. } = decoded else { continue };
        if retired != retirement_id {
            continue;
        }
        let retired_at = event
            .occurred_at()
            .ok_or_else(|| SenderError::Invalid(format!("event {} has no timestamp", event.position)))?;
        return Ok(Some(Certificate {
            id: retirement_id,
            amount,
            beneficiary,
            reason,
            consumption_period,
            country,
            retired_at,
            position: event.position,
            event_hash: hex::encode(hash),
        }));
    }
    Ok(None)
}

/// `cert_hash`: SHA-256 of the certificate document's RFC 8785 bytes.
pub fn cert_hash(certificate: &Certificate) -> Result<B256, SenderError> {
    let digest = event_store::canonical::canonical_sha256(&certificate.document())
        .map_err(|e| SenderError::Invalid(e.to_string()))?;
    Ok(B256::from(digest))
}

impl Sender {
    fn token(&self) -> CarbonToken::CarbonTokenInstance<&alloy::providers::DynProvider> {
        CarbonToken::new(self.chain.contracts.carbon_token, &self.chain.provider)
    }

    pub(super) async fn token_paused(&self) -> Result<bool, SenderError> {
        Ok(self.token().paused().call().await?)
    }

    /// A mined transaction at or below the final block: still canonical? Then final, and its
    /// work settled; otherwise pending again.
    pub(super) async fn finalize(&mut self, tx: &OpenTx, mined: Mined, final_block: u64) -> Result<(), SenderError> {
        let receipt = self.chain.provider.get_transaction_receipt(mined.tx_hash).await?;
        let canonical_hash = self
            .chain
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(mined.block_number))
            .await?
            .map(|block| block.header.hash);
        let still = receipt.as_ref().is_some_and(|r| r.block_hash == Some(mined.block_hash))
            && canonical_hash == Some(mined.block_hash);
        if !still {
            tracing::warn!(tx_hash = %mined.tx_hash, block = mined.block_number,
                "a mined transaction left the canonical chain (reorg); pending again");
            store::set_unmined(self.store.pool(), tx).await?;
            return Ok(());
        }
        if !mined.succeeded {
            tracing::warn!(kind = tx.kind.as_str(), subject = %tx.subject, tx_hash = %mined.tx_hash,
                "a transaction reverted; its work is queued again (never compensated)");
            return Ok(store::finish_and_requeue(self.store.pool(), tx).await?);
        }
        match tx.kind {
            Kind::Mint => {
                let id: Uuid = tx.subject.parse().map_err(|_| SenderError::Invalid(tx.subject.clone()))?;
                self.complete_withdrawal(id, Some(tx), mined.tx_hash, mined.block_number).await
            }
            Kind::RecordRetirement | Kind::Anchor | Kind::Pause => {
                let _ = final_block;
                Ok(store::finish_plain(self.store.pool(), tx, &mined).await?)
            }
        }
    }

    /// Records a final mint: `CompleteChainWithdrawal` on the wallet, the queue row final and
    /// the transaction (if ours) final, in one unit of work.
    async fn complete_withdrawal(
        &mut self,
        withdrawal_id: Uuid,
        tx: Option<&OpenTx>,
        tx_hash: B256,
        block_number: u64,
    ) -> Result<(), SenderError> {
        let store = self.store.clone();
        let Some(wallet_id) = self.try_complete(&store, withdrawal_id, tx, tx_hash, block_number).await? else {
            return Ok(());
        };
        if self.stale_refusal(wallet_id, withdrawal_id).await? {
            let uncached = Store::new(self.store.pool().clone());
            if self.try_complete(&uncached, withdrawal_id, tx, tx_hash, block_number).await?.is_none() {
                return Ok(());
            }
        }
        tracing::error!(alert = "chain_withdrawal_rejected", %withdrawal_id, tx_hash = %tx_hash,
            "the wallet holds no pending withdrawal for a final mint; the transaction is closed");
        if let Some(tx) = tx {
            sqlx::query(store::SET_TRANSACTION_FINAL)
                .bind(tx.signer.as_slice())
                .bind(tx.nonce as i64)
                .execute(self.store.pool())
                .await?;
        }
        Ok(())
    }

    /// Whether the wallet refused a settlement on a stale state: the database still holds the
    /// pending withdrawal. A process caches stream states, and another process (the API, when
    /// run apart from the bridge) may have written the wallet since; a refusal, unlike a write,
    /// does not meet the stream's sequence, so it is checked here against the database.
    async fn stale_refusal(&self, wallet_id: Uuid, withdrawal_id: Uuid) -> Result<bool, SenderError> {
        let fresh = self.store.load_current::<Wallet>(&wallet_id.to_string()).await?;
        let stale = fresh.aggregate.pending_withdrawals.contains_key(&withdrawal_id);
        if stale {
            tracing::warn!(%withdrawal_id, "the wallet refused on a stale cached state; retrying from the database");
        }
        Ok(stale)
    }

    /// One attempt of [`Self::complete_withdrawal`] through `store`: `None` when done (or
    /// settled before), the wallet's id when the wallet refused.
    async fn try_complete(
        &self,
        store: &Store,
        withdrawal_id: Uuid,
        tx: Option<&OpenTx>,
        tx_hash: B256,
        block_number: u64,
    ) -> Result<Option<Uuid>, SenderError> {
        let Begun::Fresh(uow) = store.begin(context("complete", &withdrawal_id.to_string()), None).await? else {
            unreachable!("no idempotency key: always fresh")
        };
        let mut uow = *uow;
        // Plain reads: a row lock would write before the events' positions are allocated. Two
        // senders settling the same withdrawal meet in the wallet's stream: one commits, the
        // other conflicts or finds it settled.
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT wallet_id, state FROM chain_withdrawals WHERE withdrawal_id = $1")
                .bind(withdrawal_id)
                .fetch_optional(uow.reader().await?)
                .await?;
        let Some((wallet_id, state)) = row else {
            return Err(SenderError::Invalid(format!("no chain_withdrawals row {withdrawal_id}")));
        };
        if state == "final" || state == "returned" {
            drop(uow);
            tracing::warn!(%withdrawal_id, %state, tx_hash = %tx_hash, "a mint of a settled withdrawal");
            if let Some(tx) = tx {
                sqlx::query(store::SET_TRANSACTION_FINAL)
                    .bind(tx.signer.as_slice())
                    .bind(tx.nonce as i64)
                    .execute(store.pool())
                    .await?;
            }
            return Ok(None);
        }
        let command = WalletCommand::CompleteChainWithdrawal { withdrawal_id, tx_hash: hex0x(tx_hash), block_number };
        if uow.execute::<Wallet>(&wallet_id.to_string(), command, &()).await?.is_err() {
            return Ok(Some(wallet_id));
        }
        if let Some(tx) = tx {
            let mut arguments = sqlx::postgres::PgArguments::default();
            arguments.add(tx.signer.to_vec()).map_err(sqlx::Error::Encode)?;
            arguments.add(tx.nonce as i64).map_err(sqlx::Error::Encode)?;
            uow.stage_statement(store::SET_TRANSACTION_FINAL, arguments);
        }
        let mut arguments = sqlx::postgres::PgArguments::default();
        arguments.add(withdrawal_id).map_err(sqlx::Error::Encode)?;
        arguments.add(tx_hash.to_vec()).map_err(sqlx::Error::Encode)?;
        arguments.add(block_number as i64).map_err(sqlx::Error::Encode)?;
        uow.stage_statement(
            "UPDATE chain_withdrawals SET state = 'final', tx_hash = $2, block_number = $3, updated_at = now() \
             WHERE withdrawal_id = $1",
            arguments,
        );
        uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
        tracing::info!(%withdrawal_id, tx_hash = %tx_hash, block_number, "withdrawal minted and final");
        Ok(None)
    }

    /// The `Minted` log of `ref` at or below `final_block`, if there is one.
    async fn minted_log(&self, r#ref: B256, final_block: u64) -> Result<Option<(B256, u64)>, SenderError> {
        let log = self.find_log(CarbonToken::Minted::SIGNATURE_HASH, r#ref, final_block).await?;
        Ok(log.and_then(|log| Some((log.transaction_hash?, log.block_number?))))
    }

    /// The newest log of the token with `signature` and first topic `topic1` at or below
    /// `final_block`, searched backwards in ranges a node accepts (most are recent).
    async fn find_log(
        &self,
        signature: B256,
        topic1: B256,
        final_block: u64,
    ) -> Result<Option<alloy::rpc::types::Log>, SenderError> {
        let mut to = final_block;
        while to >= self.chain.first_block {
            let from = to.saturating_sub(LOG_RANGE_BLOCKS_MAX - 1).max(self.chain.first_block);
            let filter = Filter::new()
                .address(self.chain.contracts.carbon_token)
                .event_signature(signature)
                .topic1(topic1)
                .from_block(from)
                .to_block(to);
            let logs = self.chain.provider.get_logs(&filter).await?;
            if let Some(log) = logs.into_iter().rfind(|log| !log.removed) {
                return Ok(Some(log));
            }
            if from == 0 {
                break;
            }
            to = from - 1;
        }
        Ok(None)
    }

    /// Mints queued withdrawals. A ref already minted (a reverted duplicate, or a mint by an
    /// earlier key) is completed from its `Minted` log once that is final, never sent again.
    pub(super) async fn send_withdrawals(&mut self) -> Result<(), SenderError> {
        let retry_after = self.config.revert_retry_after.as_secs_f64();
        let queued = store::queued_withdrawals(self.store.pool(), WORK_PER_ROUND_MAX, retry_after).await?;
        for withdrawal in queued {
            let r#ref = uuid_ref(withdrawal.withdrawal_id);
            if self.token().mintedRef(r#ref).call().await? {
                let final_block = self.final_block().await?;
                if let Some((tx_hash, block)) = self.minted_log(r#ref, final_block).await? {
                    self.complete_withdrawal(withdrawal.withdrawal_id, None, tx_hash, block).await?;
                }
                continue;
            }
            if !withdrawal.ready {
                continue;
            }
            let amount = token_units(withdrawal.amount)?;
            let input: Bytes = CarbonToken::mintCall { to: withdrawal.address, amount, r#ref }.abi_encode().into();
            let id = withdrawal.withdrawal_id;
            let token = self.chain.contracts.carbon_token;
            self.send(Kind::Mint, &id.to_string(), token, input, QueueUpdate::Withdrawal(id)).await?;
        }
        Ok(())
    }

    /// Credits back withdrawals an admin asked to cancel, only when provably never minted:
    /// no transaction of it open, each signer's nonce count at the final block past every
    /// nonce used for it, and `mintedRef` false at that block.
    pub(super) async fn settle_cancellations(&mut self) -> Result<(), SenderError> {
        let requests = store::cancel_requests(self.store.pool(), WORK_PER_ROUND_MAX).await?;
        if requests.is_empty() {
            return Ok(());
        }
        let final_block = self.final_block().await?;
        let at_final = BlockNumberOrTag::Number(final_block);
        'requests: for request in requests {
            if request.open_transactions {
                continue;
            }
            for (signer, nonce) in &request.nonces {
                let count = self.chain.provider.get_transaction_count(*signer).block_id(at_final.into()).await?;
                if count <= *nonce {
                    continue 'requests;
                }
            }
            let id = request.withdrawal.withdrawal_id;
            let r#ref = uuid_ref(id);
            if self.token().mintedRef(r#ref).block(at_final.into()).call().await? {
                // Minted after all: complete it, never credit back.
                if let Some((tx_hash, block)) = self.minted_log(r#ref, final_block).await? {
                    self.complete_withdrawal(id, None, tx_hash, block).await?;
                }
                continue;
            }
            self.return_withdrawal(&request.withdrawal, final_block).await?;
        }
        Ok(())
    }

    async fn return_withdrawal(
        &mut self,
        withdrawal: &store::QueuedWithdrawal,
        final_block: u64,
    ) -> Result<(), SenderError> {
        let store = self.store.clone();
        if !self.try_return(&store, withdrawal, final_block).await? {
            return Ok(());
        }
        let id = withdrawal.withdrawal_id;
        if self.stale_refusal(withdrawal.wallet_id, id).await? {
            let uncached = Store::new(self.store.pool().clone());
            if !self.try_return(&uncached, withdrawal, final_block).await? {
                return Ok(());
            }
        }
        Err(SenderError::Invalid(format!("the wallet refused ReturnChainWithdrawal of {id}")))
    }

    /// One attempt of [`Self::return_withdrawal`]: `true` when the wallet refused.
    async fn try_return(
        &self,
        store: &Store,
        withdrawal: &store::QueuedWithdrawal,
        final_block: u64,
    ) -> Result<bool, SenderError> {
        let id = withdrawal.withdrawal_id;
        let Begun::Fresh(uow) = store.begin(context("return", &id.to_string()), None).await? else {
            unreachable!("no idempotency key: always fresh")
        };
        let mut uow = *uow;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM chain_withdrawals WHERE withdrawal_id = $1")
            .bind(id)
            .fetch_optional(uow.reader().await?)
            .await?;
        if !matches!(state.as_deref(), Some("queued" | "submitted")) {
            return Ok(false);
        }
        let reason = format!("cancelled by an admin; never minted (checked at final block {final_block})");
        let command = WalletCommand::ReturnChainWithdrawal { withdrawal_id: id, reason: reason.clone() };
        if uow.execute::<Wallet>(&withdrawal.wallet_id.to_string(), command, &()).await?.is_err() {
            return Ok(true);
        }
        let mut arguments = sqlx::postgres::PgArguments::default();
        arguments.add(id).map_err(sqlx::Error::Encode)?;
        arguments.add(reason).map_err(sqlx::Error::Encode)?;
        uow.stage_statement(
            "UPDATE chain_withdrawals SET state = 'returned', reason = $2, updated_at = now() WHERE withdrawal_id = $1",
            arguments,
        );
        uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
        tracing::info!(withdrawal_id = %id, final_block, "cancelled withdrawal credited back: never minted");
        Ok(false)
    }

    /// Records queued retirements on the chain with their certificate's hash. One already
    /// recorded (a reverted repeat) is final from its `RetirementRecorded` log.
    pub(super) async fn send_retirements(&mut self) -> Result<(), SenderError> {
        let retry_after = self.config.revert_retry_after.as_secs_f64();
        let queued = store::queued_retirements(self.store.pool(), WORK_PER_ROUND_MAX, retry_after).await?;
        for retirement in queued {
            let id = retirement.retirement_id;
            let Some(certificate) = certificate(&self.store, id).await? else {
                tracing::warn!(retirement_id = %id, "a queued retirement without its details or event; skipped");
                continue;
            };
            let cert_hash = cert_hash(&certificate)?;
            let r#ref = uuid_ref(id);
            let recorded = self.token().recordedRetirements(r#ref).call().await?;
            if recorded.certHash != B256::ZERO {
                self.settle_recorded_retirement(id, r#ref, cert_hash).await?;
                continue;
            }
            if !retirement.ready {
                continue;
            }
            let amount = token_units(retirement.amount)?;
            let input: Bytes =
                CarbonToken::recordRetirementCall { id: r#ref, amount, certHash: cert_hash }.abi_encode().into();
            let token = self.chain.contracts.carbon_token;
            let update = QueueUpdate::Retirement { retirement_id: id, cert_hash };
            self.send(Kind::RecordRetirement, &id.to_string(), token, input, update).await?;
        }
        Ok(())
    }

    async fn settle_recorded_retirement(&mut self, id: Uuid, r#ref: B256, cert_hash: B256) -> Result<(), SenderError> {
        let final_block = self.final_block().await?;
        let signature = CarbonToken::RetirementRecorded::SIGNATURE_HASH;
        let Some(log) = self.find_log(signature, r#ref, final_block).await? else { return Ok(()) };
        if log.topics().get(2) != Some(&cert_hash) {
            tracing::error!(alert = "chain_retirement_hash_mismatch", retirement_id = %id,
                "the chain holds another certificate hash for this retirement");
        }
        sqlx::query(
            "UPDATE chain_retirements SET state = 'final', cert_hash = $2, tx_hash = $3, block_number = $4, \
             updated_at = now() WHERE retirement_id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(cert_hash.as_slice())
        .bind(log.transaction_hash.map(|h| h.to_vec()))
        .bind(log.block_number.map(|b| b as i64))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Sends `pause()` while the admin's control says paused and the token is not. Unpausing
    /// takes the admin (cold) key, which the bridge never holds: it is only reported.
    pub(super) async fn send_pause(&mut self) -> Result<(), SenderError> {
        let wanted = store::controls_paused(self.store.pool()).await?;
        let paused = self.token_paused().await?;
        if wanted == paused || store::pause_in_flight(self.store.pool()).await? {
            return Ok(());
        }
        if !wanted {
            tracing::warn!(
                alert = "chain_unpause_needs_admin",
                "the ledger's controls say unpaused but the token is paused: unpause() takes the admin key"
            );
            return Ok(());
        }
        let input: Bytes = CarbonToken::pauseCall {}.abi_encode().into();
        let token = self.chain.contracts.carbon_token;
        self.send(Kind::Pause, "token", token, input, QueueUpdate::Nothing).await?;
        Ok(())
    }

    /// Anchors the newest checkpoint below the published watermark once `anchor_every`
    /// events were added since the last anchor, or `anchor_interval` passed and anything
    /// moved. One anchor in flight at a time; a position the contract has passed is skipped.
    pub(super) async fn send_anchor(&mut self) -> Result<(), SenderError> {
        let Some(checkpoint) = store::anchorable_checkpoint(self.store.pool()).await? else { return Ok(()) };
        let last = store::last_anchor(self.store.pool()).await?;
        let (last_position, last_count, secs_since) = match last {
            Some((_, _, _, true)) => return Ok(()),
            Some((position, count, secs, false)) => (position, count, secs),
            None => (0, 0, self.started.elapsed().as_secs_f64()),
        };
        if checkpoint.position <= last_position {
            return Ok(());
        }
        let by_count = checkpoint.count - last_count >= self.config.anchor_every;
        let by_time = secs_since >= self.config.anchor_interval.as_secs_f64();
        if !by_count && !by_time {
            return Ok(());
        }
        let anchor = LedgerAnchor::new(self.chain.contracts.anchor, &self.chain.provider);
        let on_chain = anchor.latestPosition().call().await?;
        let (Ok(position), Ok(count)) = (u64::try_from(checkpoint.position), u64::try_from(checkpoint.count)) else {
            return Err(SenderError::Invalid(format!("checkpoint {checkpoint:?} out of range")));
        };
        if position <= on_chain {
            return Ok(());
        }
        let input: Bytes =
            LedgerAnchor::anchorCall { position, headHash: checkpoint.head_hash, count }.abi_encode().into();
        let to: Address = self.chain.contracts.anchor;
        self.send(Kind::Anchor, &checkpoint.position.to_string(), to, input, QueueUpdate::Anchor(checkpoint)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carbon_amounts_map_to_token_units_exactly() {
        let cases = [("1.500", Some(1_500u64)), ("0.001", Some(1)), ("2", Some(2_000)), ("0.0005", None), ("0", None)];
        for (amount, expected) in cases {
            let units = token_units(amount.parse().unwrap()).ok();
            assert_eq!(units, expected.map(U256::from), "{amount}");
        }
    }
}
