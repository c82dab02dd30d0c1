//! Group commit: units of work that did not open a transaction of their own are written by
//! one committer task per process, many to a Postgres transaction. A hot stream's commands
//! then cost one round of statements and one COMMIT between them instead of one each, and
//! every command saves its own BEGIN, position allocation and COMMIT.
//!
//! The committer takes what is queued (in the order units of work left their streams), writes
//! it in one transaction and hands the COMMIT to a task of its own, so the next group's
//! statements run while the previous one's COMMIT is flushed. A group commits whole or not
//! at all:
//! - a statement fails (a claim taken, a conflict): the group is rolled back and its units
//!   are written one by one, each with its own error;
//! - the COMMIT fails, or a unit of work it built on did not commit: every unit fails
//!   (`Conflict`, or the database's error), and so does whatever built on them.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::error::StoreError;
use crate::open_tx::{Connections, OpenTransaction};
use crate::store::{commit_state, committed, CommitState, PendingCommit, Store, Wrote};
use crate::uow::{Committed, DueSnapshot};
use crate::write::{event_count, write_units, UnitWrite, Written};

/// Units of work written in one transaction at most.
const UNITS_PER_GROUP_MAX: usize = 256;
/// Events written in one transaction at most (a group stops growing past it).
const EVENTS_PER_GROUP_MAX: usize = 2_000;
/// Groups whose COMMIT may be in flight at once, each on its own connection.
const COMMITS_IN_FLIGHT_MAX: usize = 4;

/// A unit of work handed to the committer.
pub(crate) struct Submission {
    pub(crate) unit: u64,
    pub(crate) write: UnitWrite,
    /// Units of work whose states this one built on, still committing when it left.
    pub(crate) depends_on: Vec<PendingCommit>,
    /// Tells whoever built on this unit of work whether it committed.
    pub(crate) outcome: watch::Sender<Option<bool>>,
    pub(crate) snapshots: Vec<DueSnapshot>,
    pub(crate) reply: oneshot::Sender<Result<Committed, StoreError>>,
}

pub(crate) type Queue = mpsc::UnboundedSender<Submission>;

/// Starts the committer of `store`, writing on connections of its pool; it ends when every
/// sender of the queue is gone.
pub(crate) fn start(store_queue: mpsc::UnboundedReceiver<Submission>, store: &Arc<crate::store::Inner>) {
    // One connection for the statements of the next group and one per COMMIT in flight.
    let connections = Connections::new(store.pool.clone(), COMMITS_IN_FLIGHT_MAX + 1);
    tokio::spawn(run(store_queue, Arc::downgrade(store), connections));
}

async fn run(
    mut queue: mpsc::UnboundedReceiver<Submission>,
    store: std::sync::Weak<crate::store::Inner>,
    connections: Arc<Connections>,
) {
    let in_flight = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let group = take_group(first, &mut queue);
        let Some(inner) = store.upgrade() else { return };
        let store = Store { inner };
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let group = admit(group);
        if group.is_empty() {
            continue;
        }
        write_group(&store, &connections, group, permit).await;
    }
}

/// The first submission and whatever is queued behind it, within the group's bounds.
fn take_group(first: Submission, queue: &mut mpsc::UnboundedReceiver<Submission>) -> Vec<Submission> {
    let mut events = first.write.events.len();
    let mut group = vec![first];
    while group.len() < UNITS_PER_GROUP_MAX && events < EVENTS_PER_GROUP_MAX {
        match queue.try_recv() {
            Ok(next) => {
                events += next.write.events.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

/// A unit admitted into a group, with the units outside it that it waits for.
struct Member {
    submission: Submission,
    waits_for: Vec<PendingCommit>,
}

/// Fails the units that built on a unit of work that did not commit, in order, so a unit
/// built on one failed here fails too; the others join the group.
fn admit(group: Vec<Submission>) -> Vec<Member> {
    let mut members = Vec::with_capacity(group.len());
    let mut in_group = HashSet::new();
    for submission in group {
        let mut waits_for = Vec::new();
        let mut failed = false;
        for dependency in &submission.depends_on {
            match commit_state(dependency) {
                CommitState::Committed => {}
                CommitState::Failed => failed = true,
                CommitState::Running if in_group.contains(&dependency.unit) => {}
                CommitState::Running => waits_for.push(dependency.clone()),
            }
        }
        if failed {
            finish(submission, Err(StoreError::Conflict));
            continue;
        }
        in_group.insert(submission.unit);
        members.push(Member { submission, waits_for });
    }
    members
}

/// Writes the group in one transaction and leaves its COMMIT to a task; on a failed
/// statement, writes its units one by one instead.
async fn write_group(
    store: &Store,
    connections: &Arc<Connections>,
    group: Vec<Member>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let units: Vec<&UnitWrite> = group.iter().map(|member| &member.submission.write).collect();
    let (mut tx, positions) = match OpenTransaction::begin(connections, event_count(&units)).await {
        Ok(begun) => begun,
        Err(error) => return fail_all(group, error),
    };
    match write_units(&mut tx, &units, &positions).await {
        Ok(written) => {
            publish_hashes(&group, &written);
            let store = store.clone();
            tokio::spawn(async move {
                commit_group(&store, tx, group, written).await;
                drop(permit);
            });
        }
        Err(_) => {
            tx.rollback().await;
            for member in group {
                write_alone(store, connections, member).await;
            }
        }
    }
}

/// Writes one unit in its own transaction: what a group's failed statement leaves to each.
async fn write_alone(store: &Store, connections: &Arc<Connections>, member: Member) {
    let Member { submission, waits_for } = member;
    // A unit of this group written alone before it may have failed.
    if submission.depends_on.iter().any(|dependency| commit_state(dependency) == CommitState::Failed) {
        return finish(submission, Err(StoreError::Conflict));
    }
    let units = [&submission.write];
    let (mut tx, positions) = match OpenTransaction::begin(connections, event_count(&units)).await {
        Ok(begun) => begun,
        Err(error) => return finish(submission, Err(error)),
    };
    match write_units(&mut tx, &units, &positions).await {
        Ok(written) => {
            let member = Member { submission, waits_for };
            publish_hashes(std::slice::from_ref(&member), &written);
            commit_group(store, tx, vec![member], written).await;
        }
        Err(error) => {
            tx.rollback().await;
            finish(submission, Err(error));
        }
    }
}

/// Sets each unit's last hashes, so units on the same streams in later groups chain from them.
fn publish_hashes(group: &[Member], written: &[Written]) {
    for (member, written) in group.iter().zip(written) {
        for (stream, hash) in &written.last_hashes {
            let cell = &member.submission.write.streams[stream].last;
            cell.set(hash.clone()).expect("a unit's hashes are published once, by the write that commits it");
        }
    }
}

/// Waits for the units outside the group that it built on, then commits and answers every unit.
async fn commit_group(store: &Store, tx: OpenTransaction, group: Vec<Member>, written: Vec<Written>) {
    for dependency in group.iter().flat_map(|member| &member.waits_for) {
        if !committed(dependency.clone()).await {
            tx.rollback().await;
            return fail_all(group, StoreError::Conflict);
        }
    }
    if let Err(error) = tx.commit().await {
        return fail_all(group, error.into());
    }
    let mut snapshots = Vec::new();
    let wrote = Wrote {
        events: written.iter().any(|written| written.position.is_some()),
        saga: group.iter().any(|member| member.submission.write.stages_saga),
    };
    for (member, written) in group.into_iter().zip(written) {
        let mut submission = member.submission;
        snapshots.append(&mut submission.snapshots);
        let committed = Committed { position: written.position, outcome: written.outcome };
        finish(submission, Ok(committed));
    }
    store.after_commit(wrote, snapshots);
}

fn fail_all(group: Vec<Member>, error: StoreError) {
    for member in group {
        finish(member.submission, Err(same_error(&error)));
    }
}

/// An error like `error` for each unit of a group (sqlx errors are not `Clone`), keeping
/// what callers tell apart: a conflict, and a database that is unavailable.
fn same_error(error: &StoreError) -> StoreError {
    let unavailable = |what: String| StoreError::Database(sqlx::Error::Io(std::io::Error::other(what)));
    match error {
        StoreError::Database(sqlx::Error::PoolTimedOut) => StoreError::Database(sqlx::Error::PoolTimedOut),
        StoreError::Database(sqlx::Error::PoolClosed) => StoreError::Database(sqlx::Error::PoolClosed),
        StoreError::Database(sqlx::Error::Io(io)) => unavailable(io.to_string()),
        StoreError::Database(sqlx::Error::Database(db))
            if db.code().is_some_and(|code| code.starts_with("57") || code.starts_with("08")) =>
        {
            unavailable(db.to_string())
        }
        StoreError::Database(other) => StoreError::Database(sqlx::Error::Protocol(format!("group commit: {other}"))),
        StoreError::ClaimTaken { kind } => StoreError::ClaimTaken { kind: kind.clone() },
        StoreError::Corrupt(what) => StoreError::Corrupt(what.clone()),
        StoreError::Nats(what) => StoreError::Nats(what.clone()),
        StoreError::Conflict | StoreError::IdempotencyKeyReused | StoreError::IdempotencyKeyInProgress => {
            StoreError::Conflict
        }
    }
}

/// Tells whoever built on the unit, then its caller, how it ended.
fn finish(submission: Submission, result: Result<Committed, StoreError>) {
    submission.outcome.send_replace(Some(result.is_ok()));
    // The caller may have given up waiting (its task was cancelled): nothing to tell.
    let _ = submission.reply.send(result);
}
