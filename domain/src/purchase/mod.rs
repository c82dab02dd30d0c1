//! Purchase (the seeds' PAYMENT): a buyer buying part of a listing. Everything the settlement
//! needs is fixed when it starts (price, its source and time, fee, total), so the saga never
//! looks anything up and a replay reaches the same books.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseTerms {
    pub purchase_id: Uuid,
    pub listing_id: Uuid,
    pub buyer_id: Uuid,
    pub buyer_cash_wallet_id: Uuid,
    pub buyer_carbon_wallet_id: Uuid,
    pub seller_id: Uuid,
    pub seller_cash_wallet_id: Uuid,
    pub seller_carbon_wallet_id: Uuid,
    pub quantity: Amount,
    pub currency: Currency,
    /// Per tonne, at the currency's scale.
    pub unit_price: Decimal,
    /// `listing` for a fixed price, else the price's source (`manual`, a provider).
    pub price_source: String,
    pub price_observed_at: DateTime<Utc>,
    pub subtotal: Amount,
    pub fee_bps: u32,
    /// May be zero.
    pub fee: Decimal,
    pub total: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseCommand {
    Initiate(Box<PurchaseTerms>),
    Complete,
    Fail { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PurchaseEvent {
    PurchaseInitiated(PurchaseTerms),
    PurchaseCompleted(PurchaseTerms),
    PurchaseFailed { terms: PurchaseTerms, reason: String },
}

impl DomainEvent for PurchaseEvent {
    fn event_type(&self) -> String {
        let name = match self {
            PurchaseEvent::PurchaseInitiated(_) => "PurchaseInitiated",
            PurchaseEvent::PurchaseCompleted(_) => "PurchaseCompleted",
            PurchaseEvent::PurchaseFailed { .. } => "PurchaseFailed",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurchaseError {
    #[error("purchase not found")]
    NotFound,
    #[error("a purchase with this id exists")]
    AlreadyInitiated,
    #[error("the purchase has already completed or failed")]
    AlreadySettled,
}

impl PurchaseError {
    pub fn code(&self) -> &'static str {
        match self {
            PurchaseError::NotFound => "purchase_not_found",
            PurchaseError::AlreadyInitiated => "purchase_exists",
            PurchaseError::AlreadySettled => "purchase_already_settled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    #[default]
    New,
    Pending,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Purchase {
    pub terms: Option<PurchaseTerms>,
    pub status: PurchaseStatus,
}

impl Purchase {
    fn decide(&self, command: PurchaseCommand) -> Result<Vec<PurchaseEvent>, PurchaseError> {
        match (command, &self.terms, self.status) {
            (PurchaseCommand::Initiate(terms), None, _) => Ok(vec![PurchaseEvent::PurchaseInitiated(*terms)]),
            (PurchaseCommand::Initiate(_), Some(_), _) => Err(PurchaseError::AlreadyInitiated),
            (_, None, _) => Err(PurchaseError::NotFound),
            (PurchaseCommand::Complete, Some(terms), PurchaseStatus::Pending) => {
                Ok(vec![PurchaseEvent::PurchaseCompleted(terms.clone())])
            }
            (PurchaseCommand::Fail { reason }, Some(terms), PurchaseStatus::Pending) => {
                Ok(vec![PurchaseEvent::PurchaseFailed { terms: terms.clone(), reason }])
            }
            (_, Some(_), _) => Err(PurchaseError::AlreadySettled),
        }
    }
}

impl Aggregate for Purchase {
    const TYPE: &'static str = "Purchase";
    type Command = PurchaseCommand;
    type Event = PurchaseEvent;
    type Error = PurchaseError;
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
            PurchaseEvent::PurchaseInitiated(terms) => {
                self.terms = Some(terms);
                self.status = PurchaseStatus::Pending;
            }
            PurchaseEvent::PurchaseCompleted(_) => self.status = PurchaseStatus::Completed,
            PurchaseEvent::PurchaseFailed { .. } => self.status = PurchaseStatus::Failed,
        }
    }
}

/// Rounds half-even to the currency's scale: how the platform rounds every amount it computes.
pub fn round_to(currency: Currency, value: Decimal) -> Decimal {
    value.round_dp_with_strategy(currency.scale(), rust_decimal::RoundingStrategy::MidpointNearestEven)
}

/// Subtotal, fee and total of `quantity` tonnes at `unit_price`: subtotal = quantity × unit
/// price and fee = subtotal × fee_bps / 10,000, each rounded half-even to the currency's scale.
/// `None` on overflow.
pub fn price_purchase(
    currency: Currency,
    quantity: Decimal,
    unit_price: Decimal,
    fee_bps: u32,
) -> Option<(Decimal, Decimal, Decimal)> {
    let subtotal = round_to(currency, quantity.checked_mul(unit_price)?);
    let fee = round_to(currency, subtotal.checked_mul(Decimal::from(fee_bps))?.checked_div(Decimal::from(10_000))?);
    Some((subtotal, fee, subtotal.checked_add(fee)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn prices_round_half_even_at_each_step() {
        // (quantity, unit price, fee bps) → (subtotal, fee, total), EUR.
        let cases = [
            ("1.000", "12.50", 0, ("12.50", "0.00", "12.50")),
            ("0.333", "10.00", 100, ("3.33", "0.03", "3.36")),
            ("0.001", "5.00", 0, ("0.00", "0.00", "0.00")),
            ("2.125", "1.00", 0, ("2.12", "0.00", "2.12")),
            ("2.135", "1.00", 0, ("2.14", "0.00", "2.14")),
            ("10.000", "71.25", 250, ("712.50", "17.81", "730.31")),
            ("1.000", "0.50", 100, ("0.50", "0.00", "0.50")),
            ("1.000", "1.50", 100, ("1.50", "0.02", "1.52")),
        ];
        for (quantity, unit, bps, (subtotal, fee, total)) in cases {
            let got = price_purchase(Currency::Eur, d(quantity), d(unit), bps).unwrap();
            assert_eq!(got, (d(subtotal), d(fee), d(total)), "{quantity} × {unit} at {bps} bps");
        }
    }
}
