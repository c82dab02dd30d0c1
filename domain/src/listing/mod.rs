//! Listing (the seeds' announcement): carbon credits a seller offers at a fixed or market
//! price. The quantity is one hold on the seller's CARBON wallet; purchases reserve parts of
//! it, then settle (capture) or release them. A listing never sells more than it has.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency};

/// Market premiums are bounded to ±50 %.
pub const PREMIUM_BPS_MAX: i32 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pricing {
    /// A price per tonne in a fiat currency.
    Fixed { unit_price: Amount, currency: Currency },
    /// The latest price of a named index plus a premium in basis points.
    Market { index: String, currency: Currency, premium_bps: i32 },
}

impl Pricing {
    pub fn currency(&self) -> Currency {
        match self {
            Pricing::Fixed { currency, .. } | Pricing::Market { currency, .. } => *currency,
        }
    }
}

/// What is sold: registry facts about the credits, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    pub project_id: String,
    pub registry: String,
    pub vintage: i32,
    pub serial_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingTerms {
    pub listing_id: Uuid,
    pub seller_id: Uuid,
    /// The seller's CARBON wallet, holding the listed quantity.
    pub seller_carbon_wallet_id: Uuid,
    /// The seller's wallet in the pricing currency, paid at settlement.
    pub seller_cash_wallet_id: Uuid,
    pub quantity: Amount,
    pub pricing: Pricing,
    pub min_fill: Option<Amount>,
    pub expires_at: DateTime<Utc>,
    pub credit: Credit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingCommand {
    Create(ListingTerms),
    Reserve { purchase_id: Uuid, quantity: Amount, now: DateTime<Utc> },
    ConfirmSale { purchase_id: Uuid },
    ReleaseReservation { purchase_id: Uuid, reason: String },
    Update { unit_price: Option<Amount>, quantity: Option<Amount> },
    Cancel,
    Expire { now: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ListingEvent {
    ListingCreated(ListingTerms),
    QuantityReserved {
        purchase_id: Uuid,
        quantity: Amount,
    },
    SaleConfirmed {
        purchase_id: Uuid,
        quantity: Amount,
    },
    ReservationReleased {
        purchase_id: Uuid,
        quantity: Amount,
        reason: String,
    },
    ListingUpdated {
        unit_price: Option<Amount>,
        quantity: Amount,
    },
    /// `unreserved` is what the cancellation released from the seller's hold.
    ListingCancelled {
        unreserved: Decimal,
    },
    ListingExpired {
        unreserved: Decimal,
    },
}

impl DomainEvent for ListingEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ListingEvent::ListingCreated(_) => "ListingCreated",
            ListingEvent::QuantityReserved { .. } => "QuantityReserved",
            ListingEvent::SaleConfirmed { .. } => "SaleConfirmed",
            ListingEvent::ReservationReleased { .. } => "ReservationReleased",
            ListingEvent::ListingUpdated { .. } => "ListingUpdated",
            ListingEvent::ListingCancelled { .. } => "ListingCancelled",
            ListingEvent::ListingExpired { .. } => "ListingExpired",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("listing not found")]
    NotFound,
    #[error("a listing with this id exists")]
    AlreadyExists,
    #[error("the listing is no longer active")]
    NotActive,
    #[error("the listing has expired")]
    Expired,
    #[error("the listing has not expired yet")]
    NotExpired,
    #[error("the quantity is below the listing's minimum fill")]
    BelowMinFill,
    #[error("the listing has less available than asked")]
    InsufficientQuantity,
    #[error("this purchase already holds a reservation")]
    ReservationExists,
    #[error("no reservation for this purchase")]
    ReservationNotFound,
    #[error("the quantity would fall below what is sold or reserved")]
    QuantityBelowCommitted,
    #[error("only a fixed-price listing has a unit price")]
    NotFixedPrice,
}

impl ListingError {
    pub fn code(&self) -> &'static str {
        match self {
            ListingError::NotFound => "announcement_not_found",
            ListingError::AlreadyExists => "announcement_exists",
            ListingError::NotActive => "announcement_not_active",
            ListingError::Expired => "announcement_expired",
            ListingError::NotExpired => "announcement_not_expired",
            ListingError::BelowMinFill => "below_min_fill",
            ListingError::InsufficientQuantity => "insufficient_quantity",
            ListingError::ReservationExists => "reservation_exists",
            ListingError::ReservationNotFound => "reservation_not_found",
            ListingError::QuantityBelowCommitted => "quantity_below_committed",
            ListingError::NotFixedPrice => "not_fixed_price",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingStatus {
    #[default]
    New,
    Active,
    Cancelled,
    Expired,
}

/// State: the terms, what is sold, and the open reservations (bounded by purchases in flight).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Listing {
    pub terms: Option<ListingTerms>,
    pub status: ListingStatus,
    pub quantity: Decimal,
    pub sold: Decimal,
    pub reservations: BTreeMap<Uuid, Decimal>,
}

impl Listing {
    pub fn reserved(&self) -> Decimal {
        self.reservations.values().copied().sum()
    }

    /// What buyers can still reserve.
    pub fn available(&self) -> Decimal {
        match self.status {
            ListingStatus::Active => self.quantity - self.sold - self.reserved(),
            _ => Decimal::ZERO,
        }
    }

    /// What the seller's CARBON hold must hold: everything unsold while active, only what
    /// purchases in flight may still capture once cancelled or expired.
    pub fn hold_target(&self) -> Decimal {
        match self.status {
            ListingStatus::Active => self.quantity - self.sold,
            _ => self.reserved(),
        }
    }

    fn terms(&self) -> Result<&ListingTerms, ListingError> {
        self.terms.as_ref().ok_or(ListingError::NotFound)
    }

    fn active_terms(&self) -> Result<&ListingTerms, ListingError> {
        let terms = self.terms()?;
        match self.status {
            ListingStatus::Active => Ok(terms),
            _ => Err(ListingError::NotActive),
        }
    }

    fn decide(&self, command: ListingCommand) -> Result<Vec<ListingEvent>, ListingError> {
        match command {
            ListingCommand::Create(terms) => match self.terms {
                Some(_) => Err(ListingError::AlreadyExists),
                None => Ok(vec![ListingEvent::ListingCreated(terms)]),
            },
            ListingCommand::Reserve { purchase_id, quantity, now } => self.decide_reserve(purchase_id, quantity, now),
            ListingCommand::ConfirmSale { purchase_id } => {
                self.terms()?;
                let quantity = self.reservation(purchase_id)?;
                Ok(vec![ListingEvent::SaleConfirmed { purchase_id, quantity }])
            }
            ListingCommand::ReleaseReservation { purchase_id, reason } => {
                self.terms()?;
                let quantity = self.reservation(purchase_id)?;
                Ok(vec![ListingEvent::ReservationReleased { purchase_id, quantity, reason }])
            }
            ListingCommand::Update { unit_price, quantity } => {
                let terms = self.active_terms()?;
                if unit_price.is_some() && !matches!(terms.pricing, Pricing::Fixed { .. }) {
                    return Err(ListingError::NotFixedPrice);
                }
                let quantity =
                    quantity.unwrap_or(Amount::new(self.quantity, Currency::Carbon).expect("a listed quantity"));
                if quantity.value() < self.sold + self.reserved() {
                    return Err(ListingError::QuantityBelowCommitted);
                }
                Ok(vec![ListingEvent::ListingUpdated { unit_price, quantity }])
            }
            ListingCommand::Cancel => {
                self.active_terms()?;
                Ok(vec![ListingEvent::ListingCancelled { unreserved: self.available() }])
            }
            ListingCommand::Expire { now } => {
                let terms = self.active_terms()?;
                if now < terms.expires_at {
                    return Err(ListingError::NotExpired);
                }
                Ok(vec![ListingEvent::ListingExpired { unreserved: self.available() }])
            }
        }
    }

    fn decide_reserve(
        &self,
        purchase_id: Uuid,
        quantity: Amount,
        now: DateTime<Utc>,
    ) -> Result<Vec<ListingEvent>, ListingError> {
        let terms = self.active_terms()?;
        if now >= terms.expires_at {
            return Err(ListingError::Expired);
        }
        if self.reservations.contains_key(&purchase_id) {
            return Err(ListingError::ReservationExists);
        }
        let available = self.available();
        if quantity.value() > available {
            return Err(ListingError::InsufficientQuantity);
        }
        // The minimum fill binds unless the buyer takes everything that is left.
        let below_min = terms.min_fill.is_some_and(|min| quantity.value() < min.value());
        if below_min && quantity.value() < available {
            return Err(ListingError::BelowMinFill);
        }
        Ok(vec![ListingEvent::QuantityReserved { purchase_id, quantity }])
    }

    fn reservation(&self, purchase_id: Uuid) -> Result<Amount, ListingError> {
        let quantity = self.reservations.get(&purchase_id).ok_or(ListingError::ReservationNotFound)?;
        Ok(Amount::new(*quantity, Currency::Carbon).expect("a reserved quantity is positive"))
    }
}

impl Aggregate for Listing {
    const TYPE: &'static str = "Listing";
    type Command = ListingCommand;
    type Event = ListingEvent;
    type Error = ListingError;
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
            ListingEvent::ListingCreated(terms) => {
                self.quantity = terms.quantity.value();
                self.terms = Some(terms);
                self.status = ListingStatus::Active;
            }
            ListingEvent::QuantityReserved { purchase_id, quantity } => {
                self.reservations.insert(purchase_id, quantity.value());
            }
            ListingEvent::SaleConfirmed { purchase_id, quantity } => {
                self.reservations.remove(&purchase_id);
                self.sold += quantity.value();
            }
            ListingEvent::ReservationReleased { purchase_id, .. } => {
                self.reservations.remove(&purchase_id);
            }
            ListingEvent::ListingUpdated { unit_price, quantity } => {
                self.quantity = quantity.value();
                if let (Some(price), Some(terms)) = (unit_price, self.terms.as_mut()) {
                    if let Pricing::Fixed { unit_price, .. } = &mut terms.pricing {
                        *unit_price = price;
                    }
                }
            }
            ListingEvent::ListingCancelled { .. } => self.status = ListingStatus::Cancelled,
            ListingEvent::ListingExpired { .. } => self.status = ListingStatus::Expired,
        }
    }
}
