//! Movements on the chain that touch no wallet: tokens bridged in for a wallet the ledger does
//! not know (`chain` → `chain_suspense`, until an admin resolves them to a wallet) and tokens a
//! holder retired on the chain (`chain` → `retired`). One stream per on-chain log, its id
//! derived from the log ([`chain_log_id`]), so a log read twice is recorded once.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts::{Account, Posting, SystemAccount};
use crate::money::{Amount, Currency};

/// Namespace of ids derived from on-chain logs.
const CHAIN_LOG_NAMESPACE: Uuid = Uuid::from_u128(0xc4a1_0b60_5e1d_4d2b_8f3a_91c7_22e5_4b07);

/// The ledger id of an on-chain log: UUIDv5 of (chain id, transaction hash, index of the log in
/// the transaction). A deposit's id and its ChainMovement stream's id are this.
pub fn chain_log_id(chain_id: u64, tx_hash: &str, log_index_in_tx: u64) -> Uuid {
    let name = format!("{chain_id}/{}/{log_index_in_tx}", tx_hash.to_ascii_lowercase());
    Uuid::new_v5(&CHAIN_LOG_NAMESPACE, name.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainMovementCommand {
    /// `BridgedIn` named an account the ledger does not know: `chain` → `chain_suspense`.
    SuspendBridgeIn { amount: Amount, account_ref: String, tx_hash: String, log_index: u64 },
    /// An admin resolved a suspended bridge-in to `wallet_id`; the wallet's own event
    /// (`ChainDeposited` from `chain_suspense`) carries the posting, in the same transaction.
    ResolveSuspense { wallet_id: Uuid },
    /// A holder retired tokens on the chain (`Retired`): `chain` → `retired`.
    RecordOnChainRetirement { amount: Amount, holder: String, cert_hash: String, tx_hash: String, log_index: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ChainMovementEvent {
    BridgeInSuspended {
        currency: Currency,
        amount: Amount,
        account_ref: String,
        tx_hash: String,
        log_index: u64,
    },
    SuspenseResolved {
        currency: Currency,
        amount: Amount,
        wallet_id: Uuid,
    },
    RetiredOnChain {
        currency: Currency,
        amount: Amount,
        holder: String,
        cert_hash: String,
        tx_hash: String,
        log_index: u64,
    },
}

impl DomainEvent for ChainMovementEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ChainMovementEvent::BridgeInSuspended { .. } => "BridgeInSuspended",
            ChainMovementEvent::SuspenseResolved { .. } => "SuspenseResolved",
            ChainMovementEvent::RetiredOnChain { .. } => "RetiredOnChain",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

impl ChainMovementEvent {
    /// The postings this event records; both sides are system accounts.
    pub fn postings(&self) -> Vec<Posting> {
        let system = |account| Account::System { account };
        let posting = |debit, credit, amount: Amount| Posting {
            debit: system(debit),
            credit: system(credit),
            currency: Currency::Carbon,
            amount: amount.value(),
        };
        match self {
            ChainMovementEvent::BridgeInSuspended { amount, .. } => {
                vec![posting(SystemAccount::Chain, SystemAccount::ChainSuspense, *amount)]
            }
            ChainMovementEvent::RetiredOnChain { amount, .. } => {
                vec![posting(SystemAccount::Chain, SystemAccount::Retired, *amount)]
            }
            ChainMovementEvent::SuspenseResolved { .. } => vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainMovementError {
    #[error("this on-chain log is already recorded")]
    AlreadyRecorded,
    #[error("no suspended bridge-in under this id")]
    SuspenseNotFound,
    #[error("this suspended bridge-in is already resolved")]
    SuspenseAlreadyResolved,
}

impl ChainMovementError {
    pub fn code(&self) -> &'static str {
        match self {
            ChainMovementError::AlreadyRecorded => "chain_log_already_recorded",
            ChainMovementError::SuspenseNotFound => "suspense_not_found",
            ChainMovementError::SuspenseAlreadyResolved => "suspense_already_resolved",
        }
    }
}

/// What a movement's stream holds: whether it was recorded, and a suspense's amount and
/// resolution.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainMovement {
    pub recorded: bool,
    /// A suspended bridge-in's amount, until resolved.
    pub suspended: Option<Decimal>,
    pub resolved_to: Option<Uuid>,
}

impl ChainMovement {
    fn decide(&self, command: ChainMovementCommand) -> Result<Vec<ChainMovementEvent>, ChainMovementError> {
        match command {
            ChainMovementCommand::SuspendBridgeIn { amount, account_ref, tx_hash, log_index } => {
                self.check_new()?;
                Ok(vec![ChainMovementEvent::BridgeInSuspended {
                    currency: Currency::Carbon,
                    amount,
                    account_ref,
                    tx_hash,
                    log_index,
                }])
            }
            ChainMovementCommand::RecordOnChainRetirement { amount, holder, cert_hash, tx_hash, log_index } => {
                self.check_new()?;
                Ok(vec![ChainMovementEvent::RetiredOnChain {
                    currency: Currency::Carbon,
                    amount,
                    holder,
                    cert_hash,
                    tx_hash,
                    log_index,
                }])
            }
            ChainMovementCommand::ResolveSuspense { wallet_id } => {
                if self.resolved_to.is_some() {
                    return Err(ChainMovementError::SuspenseAlreadyResolved);
                }
                let amount = self.suspended.ok_or(ChainMovementError::SuspenseNotFound)?;
                let amount = Amount::new(amount, Currency::Carbon).expect("a suspended amount was a valid amount");
                Ok(vec![ChainMovementEvent::SuspenseResolved { currency: Currency::Carbon, amount, wallet_id }])
            }
        }
    }

    fn check_new(&self) -> Result<(), ChainMovementError> {
        if self.recorded {
            return Err(ChainMovementError::AlreadyRecorded);
        }
        Ok(())
    }
}

impl Aggregate for ChainMovement {
    const TYPE: &'static str = "ChainMovement";
    type Command = ChainMovementCommand;
    type Event = ChainMovementEvent;
    type Error = ChainMovementError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ChainMovementEvent::BridgeInSuspended { amount, .. } => {
                self.recorded = true;
                self.suspended = Some(amount.value());
            }
            ChainMovementEvent::RetiredOnChain { .. } => self.recorded = true,
            ChainMovementEvent::SuspenseResolved { wallet_id, .. } => self.resolved_to = Some(wallet_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carbon(value: &str) -> Amount {
        Amount::new(value.parse().unwrap(), Currency::Carbon).unwrap()
    }

    fn run(state: &mut ChainMovement, command: ChainMovementCommand) -> Result<(), ChainMovementError> {
        for event in state.decide(command)? {
            state.apply(event);
        }
        Ok(())
    }

    #[test]
    fn a_log_is_recorded_once_and_a_suspense_resolves_once() {
        let mut movement = ChainMovement::default();
        let suspend = ChainMovementCommand::SuspendBridgeIn {
            amount: carbon("1.500"),
            account_ref: "0xabc".into(),
            tx_hash: "0x01".into(),
            log_index: 0,
        };
        run(&mut movement, suspend.clone()).unwrap();
        assert_eq!(run(&mut movement, suspend), Err(ChainMovementError::AlreadyRecorded));
        let wallet_id = Uuid::new_v4();
        run(&mut movement, ChainMovementCommand::ResolveSuspense { wallet_id }).unwrap();
        assert_eq!(movement.resolved_to, Some(wallet_id));
        assert_eq!(
            run(&mut movement, ChainMovementCommand::ResolveSuspense { wallet_id }),
            Err(ChainMovementError::SuspenseAlreadyResolved)
        );
    }

    #[test]
    fn an_on_chain_retirement_is_not_a_suspense() {
        let mut movement = ChainMovement::default();
        let retire = ChainMovementCommand::RecordOnChainRetirement {
            amount: carbon("2"),
            holder: "0xdef".into(),
            cert_hash: "0x02".into(),
            tx_hash: "0x03".into(),
            log_index: 1,
        };
        run(&mut movement, retire).unwrap();
        let resolve = ChainMovementCommand::ResolveSuspense { wallet_id: Uuid::new_v4() };
        assert_eq!(run(&mut movement, resolve), Err(ChainMovementError::SuspenseNotFound));
    }

    #[test]
    fn log_ids_differ_by_chain_transaction_and_index_but_not_by_hex_case() {
        let id = chain_log_id(31337, "0xAB", 0);
        assert_eq!(id, chain_log_id(31337, "0xab", 0));
        assert_ne!(id, chain_log_id(31337, "0xab", 1));
        assert_ne!(id, chain_log_id(1, "0xab", 0));
    }
}
