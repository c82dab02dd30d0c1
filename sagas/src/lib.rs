//! Sagas: flows of several steps (purchases and listing expiries; transfers that an earlier
//! version left pending).
//!
//! A saga's state is a row in Postgres (`sagas`) with a `next_attempt_at`. Workers lease due
//! rows with `FOR UPDATE SKIP LOCKED`, so any number of them compete safely; a commit in this
//! process, a NOTIFY from another, or a slow poll wakes them. Each step is a unit of work whose
//! aggregates make it happen once: a crash, a retry or two workers on one saga never repeat a
//! posting.

mod listing_expiry;
mod purchase;
mod step;
mod transfer;
mod worker;

pub use listing_expiry::{ListingExpirySaga, LISTING_EXPIRY_SAGA};
pub use purchase::{PurchaseSaga, PURCHASE_SAGA};
pub use step::StepResult;
pub use transfer::{settle_in as settle_transfer_in, Settlement, TransferSaga, TRANSFER_SAGA};
pub use worker::SagaWorker;
