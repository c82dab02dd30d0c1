//! cqrs-es 0.5's `EventStore` trait over our Postgres store, for code written against
//! cqrs-es. The command API uses units of work directly (it needs several aggregates, claims
//! and idempotency in one transaction); both write through the same code.

use std::collections::HashMap;
use std::marker::PhantomData;

use cqrs_es::{AggregateContext, AggregateError, EventEnvelope, EventStore};

use crate::error::StoreError;
use crate::metadata::{self, CommandContext};
use crate::record::RecordedEvent;
use crate::store::{decode_event, Snapshotted, Store};
use crate::uow::{Begun, Outcome};

pub struct PgEventStore<A> {
    store: Store,
    _aggregate: PhantomData<A>,
}

impl<A> PgEventStore<A> {
    pub fn new(store: Store) -> Self {
        PgEventStore { store, _aggregate: PhantomData }
    }
}

pub struct PgAggregateContext<A> {
    pub aggregate_id: String,
    pub aggregate: A,
    pub sequence: i64,
    pub head_hash: Vec<u8>,
}

impl<A: Snapshotted> AggregateContext<A> for PgAggregateContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

fn to_aggregate_error<E: std::error::Error>(error: StoreError) -> AggregateError<E> {
    match error {
        StoreError::Conflict => AggregateError::AggregateConflict,
        StoreError::Database(error) => AggregateError::DatabaseConnectionError(Box::new(error)),
        StoreError::Corrupt(text) => AggregateError::DeserializationError(text.into()),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}

/// Builds a command context from cqrs-es metadata, filling what is missing.
fn context_from(metadata: &HashMap<String, String>) -> CommandContext {
    let mut context = CommandContext::new(metadata.get(metadata::ACTOR).cloned().unwrap_or_else(|| "cqrs".into()));
    let uuid = |key: &str| metadata.get(key).and_then(|v| v.parse().ok());
    if let Some(id) = uuid(metadata::REQUEST_ID) {
        context.request_id = id;
    }
    if let Some(id) = uuid(metadata::CORRELATION_ID) {
        context.correlation_id = id;
    }
    context.causation_id = uuid(metadata::CAUSATION_ID);
    if let Some(id) = uuid(metadata::COMMAND_ID) {
        context.command_id = id;
    }
    context
}

impl<A: Snapshotted> EventStore<A> for PgEventStore<A> {
    type AC = PgAggregateContext<A>;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT canonical FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| to_aggregate_error(e.into()))?;
        rows.iter()
            .map(|(canonical,)| {
                let recorded =
                    RecordedEvent::from_canonical(canonical).map_err(|e| to_aggregate_error(StoreError::corrupt(e)))?;
                Ok(EventEnvelope {
                    aggregate_id: recorded.aggregate_id.clone(),
                    sequence: recorded.sequence as usize,
                    payload: decode_event::<A>(&recorded).map_err(to_aggregate_error)?,
                    metadata: crate::uow::metadata_map(&recorded.metadata),
                })
            })
            .collect()
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<Self::AC, AggregateError<A::Error>> {
        let loaded = self.store.load_current::<A>(aggregate_id).await.map_err(to_aggregate_error)?;
        Ok(PgAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate: loaded.aggregate,
            sequence: loaded.sequence,
            head_hash: loaded.head_hash,
        })
    }

    /// Writes `events`, which the caller's `handle` already applied to `context`'s aggregate
    /// through `EventSink::write`: they are not applied again here.
    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let command = context_from(&metadata);
        let mut uow = match self.store.begin(command.clone(), None).await.map_err(to_aggregate_error)? {
            Begun::Fresh(uow) => *uow,
            Begun::Replayed(_) => unreachable!("no idempotency key was given"),
        };
        uow.set_head(A::TYPE, &context.aggregate_id, context.head_hash).await.map_err(to_aggregate_error)?;
        uow.stage::<A>(&context.aggregate_id, context.sequence, &events).map_err(to_aggregate_error)?;
        let ok = |_| Outcome::new(200, serde_json::Value::Null);
        uow.commit(ok).await.map_err(to_aggregate_error)?;
        let stored_metadata = crate::uow::metadata_map(&command.metadata());
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(offset, payload)| EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence: context.sequence as usize + offset + 1,
                payload,
                metadata: stored_metadata.clone(),
            })
            .collect())
    }
}
