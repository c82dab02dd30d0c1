//! Transfer: money moving between two wallets of one currency, through `transit`.
//!
//! The transfer's own stream records what was asked and how it ended; the postings are in the
//! wallets' events. Its state machine makes each saga step happen once: a transfer completes
//! or fails exactly once, whatever retries the saga makes.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency};

/// Who pays whom: everything the completion and failure events repeat, so consumers
/// (notifications) act without a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferParties {
    pub transfer_id: Uuid,
    pub from_wallet_id: Uuid,
    pub from_user_id: Uuid,
    pub to_wallet_id: Uuid,
    pub to_user_id: Uuid,
    pub currency: Currency,
    pub amount: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    Initiate(TransferParties),
    Complete,
    Fail { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TransferEvent {
    TransferInitiated(TransferParties),
    TransferCompleted(TransferParties),
    TransferFailed { parties: TransferParties, reason: String },
}

impl DomainEvent for TransferEvent {
    fn event_type(&self) -> String {
        let name = match self {
            TransferEvent::TransferInitiated(_) => "TransferInitiated",
            TransferEvent::TransferCompleted(_) => "TransferCompleted",
            TransferEvent::TransferFailed { .. } => "TransferFailed",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("transfer not found")]
    NotFound,
    #[error("a transfer with this id exists")]
    AlreadyInitiated,
    #[error("the transfer has already completed or failed")]
    AlreadySettled,
}

impl TransferError {
    pub fn code(&self) -> &'static str {
        match self {
            TransferError::NotFound => "transfer_not_found",
            TransferError::AlreadyInitiated => "transfer_exists",
            TransferError::AlreadySettled => "transfer_already_settled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    #[default]
    New,
    Pending,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Transfer {
    pub parties: Option<TransferParties>,
    pub status: TransferStatus,
}

impl Transfer {
    fn decide(&self, command: TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        match (command, &self.parties, self.status) {
            (TransferCommand::Initiate(parties), None, _) => Ok(vec![TransferEvent::TransferInitiated(parties)]),
            (TransferCommand::Initiate(_), Some(_), _) => Err(TransferError::AlreadyInitiated),
            (_, None, _) => Err(TransferError::NotFound),
            (TransferCommand::Complete, Some(parties), TransferStatus::Pending) => {
                Ok(vec![TransferEvent::TransferCompleted(parties.clone())])
            }
            (TransferCommand::Fail { reason }, Some(parties), TransferStatus::Pending) => {
                Ok(vec![TransferEvent::TransferFailed { parties: parties.clone(), reason }])
            }
            (_, Some(_), _) => Err(TransferError::AlreadySettled),
        }
    }
}

impl Aggregate for Transfer {
    const TYPE: &'static str = "Transfer";
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;
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
            TransferEvent::TransferInitiated(parties) => {
                self.parties = Some(parties);
                self.status = TransferStatus::Pending;
            }
            TransferEvent::TransferCompleted(_) => self.status = TransferStatus::Completed,
            TransferEvent::TransferFailed { .. } => self.status = TransferStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn parties() -> TransferParties {
        TransferParties {
            transfer_id: Uuid::from_u128(1),
            from_wallet_id: Uuid::from_u128(2),
            from_user_id: Uuid::from_u128(3),
            to_wallet_id: Uuid::from_u128(4),
            to_user_id: Uuid::from_u128(5),
            currency: Currency::Eur,
            amount: Amount::parse("10", Currency::Eur).unwrap(),
        }
    }

    fn initiated() -> TransferEvent {
        TransferEvent::TransferInitiated(parties())
    }

    fn failed() -> TransferEvent {
        TransferEvent::TransferFailed { parties: parties(), reason: "x".into() }
    }

    /// One scenario: given these events, when this command, then these events or this error.
    type Case = (Vec<TransferEvent>, TransferCommand, Result<Vec<TransferEvent>, TransferError>);

    #[test]
    fn transfer_rules() {
        use TransferCommand::*;
        use TransferError::*;
        let fail = || Fail { reason: "wallet_not_found".into() };
        let cases: Vec<Case> = vec![
            (vec![], Initiate(parties()), Ok(vec![initiated()])),
            (vec![initiated()], Initiate(parties()), Err(AlreadyInitiated)),
            (vec![], Complete, Err(NotFound)),
            (vec![], fail(), Err(NotFound)),
            (vec![initiated()], Complete, Ok(vec![TransferEvent::TransferCompleted(parties())])),
            (
                vec![initiated()],
                fail(),
                Ok(vec![TransferEvent::TransferFailed { parties: parties(), reason: "wallet_not_found".into() }]),
            ),
            (vec![initiated(), TransferEvent::TransferCompleted(parties())], Complete, Err(AlreadySettled)),
            (vec![initiated(), TransferEvent::TransferCompleted(parties())], fail(), Err(AlreadySettled)),
            (vec![initiated(), failed()], Complete, Err(AlreadySettled)),
            (vec![initiated(), failed()], fail(), Err(AlreadySettled)),
        ];
        for (given, when, then) in cases {
            let validator = TestFramework::<Transfer>::with(()).given(given).when(when);
            match then {
                Ok(events) => validator.then_expect_events(events),
                Err(error) => validator.then_expect_error(error),
            }
        }
    }
}
