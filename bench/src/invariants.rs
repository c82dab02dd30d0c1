//! The ledger's invariants, checked over a database after a run (DESIGN.md sections 1, 3 and 5):
//! what a client saw acknowledged is in the event store, no money moved twice, every saga
//! finished, the books balance, the read models are what a replay makes of the events, and the
//! hash chains hold. Each rule is named; a report lists the problems each rule found.
//!
//! Run it on a quiet ledger: the relay published the head, projections and sagas caught up
//! (the fault runner waits for that first). It writes one scratch schema, [`REPLAY_SCHEMA`], so
//! two checks must not run at once on one database.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use event_store::Store;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// Every acknowledged deposit and transfer is in `events` and in its read model.
pub const ACKNOWLEDGED_NOT_LOST: &str = "no_acknowledged_command_lost";
/// No two money events of one wallet share a transaction id and type; no statement line or
/// posting repeated; each wallet's balance is the sum of its statement lines.
pub const NO_DOUBLE_POSTING: &str = "no_posting_applied_twice";
/// Every transfer and purchase saga completed or failed.
pub const SAGAS_FINISHED: &str = "no_saga_left_unfinished";
/// Per currency, wallets and system accounts sum to zero, and the journal agrees with them.
pub const TRIAL_BALANCE: &str = "trial_balance_zero";
/// A replay of every projection from the events reproduces the live tables row for row.
pub const REPLAY_EQUAL: &str = "read_models_equal_replay";
/// `event_store::verify`: every stream's hash chain and the global chain hold.
pub const CHAINS_VERIFY: &str = "hash_chains_verify";

/// The rules, in the order a report lists them.
pub const RULES: [&str; 6] =
    [ACKNOWLEDGED_NOT_LOST, NO_DOUBLE_POSTING, SAGAS_FINISHED, TRIAL_BALANCE, REPLAY_EQUAL, CHAINS_VERIFY];

/// Scratch schema the replay rule fills (dropped afterwards).
pub const REPLAY_SCHEMA: &str = "invariant_check";
/// Problems a rule lists in full; the rest are counted.
const PROBLEMS_SHOWN_MAX: usize = 10;
/// Wallet events that move money, with the payload field that identifies the movement (the
/// first of these a payload has).
const MONEY_EVENT_TYPES: [&str; 15] = [
    "Deposited",
    "WithdrawalRequested",
    "WithdrawalCompleted",
    "WithdrawalFailed",
    "TransactionReversed",
    "TransferDebited",
    "TransferCredited",
    "TransferReturned",
    "PurchaseCredited",
    "HoldCaptured",
    "ChainWithdrawalRequested",
    "ChainWithdrawalMinted",
    "ChainWithdrawalReturned",
    "ChainDeposited",
    "CreditsRetired",
];

/// What a client saw acknowledged: a 201 deposit (its `transaction_id`) or a 202 transfer
/// (its `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Acknowledged {
    pub kind: CommandKind,
    pub id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    Deposit,
    Transfer,
}

impl Acknowledged {
    pub fn deposit(id: Uuid) -> Acknowledged {
        Acknowledged { kind: CommandKind::Deposit, id }
    }

    pub fn transfer(id: Uuid) -> Acknowledged {
        Acknowledged { kind: CommandKind::Transfer, id }
    }
}

/// One rule's outcome: holds when it found no problem.
#[derive(Debug, Clone)]
pub struct RuleResult {
    pub name: &'static str,
    /// Up to [`PROBLEMS_SHOWN_MAX`] problems, then a count of the rest.
    pub problems: Vec<String>,
}

impl RuleResult {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub rules: Vec<RuleResult>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.rules.iter().all(RuleResult::ok)
    }

    /// Names of the rules that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.rules.iter().filter(|r| !r.ok()).map(|r| r.name).collect()
    }

    pub fn rule(&self, name: &str) -> Option<&RuleResult> {
        self.rules.iter().find(|r| r.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.rules {
            if rule.ok() {
                writeln!(f, "  ok      {}", rule.name)?;
            } else {
                writeln!(f, "  FAILED  {}", rule.name)?;
                for problem in &rule.problems {
                    writeln!(f, "          - {problem}")?;
                }
            }
        }
        Ok(())
    }
}

type Problems = Vec<String>;

/// Checks every rule over the ledger in `pool`; `acknowledged` is every command a client saw
/// succeed. A rule whose own queries fail fails with that error as its problem.
pub async fn check(pool: &PgPool, acknowledged: &[Acknowledged]) -> Report {
    let rules = vec![
        rule(ACKNOWLEDGED_NOT_LOST, acknowledged_not_lost(pool, acknowledged).await),
        rule(NO_DOUBLE_POSTING, no_double_posting(pool).await),
        rule(SAGAS_FINISHED, sagas_finished(pool).await),
        rule(TRIAL_BALANCE, trial_balance(pool).await),
        rule(REPLAY_EQUAL, replay_equal(pool).await),
        rule(CHAINS_VERIFY, chains_verify(pool).await),
    ];
    Report { rules }
}

fn rule(name: &'static str, outcome: anyhow::Result<Problems>) -> RuleResult {
    let mut problems = outcome.unwrap_or_else(|error| vec![format!("the check itself failed: {error:#}")]);
    if problems.len() > PROBLEMS_SHOWN_MAX {
        let more = problems.len() - PROBLEMS_SHOWN_MAX;
        problems.truncate(PROBLEMS_SHOWN_MAX);
        problems.push(format!("... and {more} more"));
    }
    RuleResult { name, problems }
}

// ---------------------------------------------------------------------------------------------
// Acknowledged commands
// ---------------------------------------------------------------------------------------------

async fn acknowledged_not_lost(pool: &PgPool, acknowledged: &[Acknowledged]) -> anyhow::Result<Problems> {
    let ids = |kind| acknowledged.iter().filter(|a| a.kind == kind).map(|a| a.id).collect::<Vec<Uuid>>();
    let (deposits, transfers) = (ids(CommandKind::Deposit), ids(CommandKind::Transfer));
    let mut problems = Vec::new();
    let checks = [
        (&deposits, "deposit", "a Deposited event", ids_in_payloads(pool, "Deposited", "transaction_id", &deposits)),
        (
            &transfers,
            "transfer",
            "a TransferDebited event",
            ids_in_payloads(pool, "TransferDebited", "transfer_id", &transfers),
        ),
    ];
    for (wanted, kind, place, found) in checks {
        missing(wanted, &found.await?, kind, place, &mut problems);
    }
    let initiated: HashSet<Uuid> = sqlx::query_scalar::<_, String>(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'Transfer' AND event_type = 'TransferInitiated' \
         AND aggregate_id = ANY($1)",
    )
    .bind(transfers.iter().map(Uuid::to_string).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?
    .iter()
    .filter_map(|id| id.parse().ok())
    .collect();
    missing(&transfers, &initiated, "transfer", "a TransferInitiated event", &mut problems);
    let in_table = |sql: &'static str, ids: Vec<Uuid>| async move {
        let found: Vec<Uuid> = sqlx::query_scalar(sql).bind(ids).fetch_all(pool).await?;
        anyhow::Ok(found.into_iter().collect::<HashSet<Uuid>>())
    };
    let listed =
        in_table("SELECT transaction_id FROM rm_transactions WHERE transaction_id = ANY($1)", deposits.clone());
    missing(&deposits, &listed.await?, "deposit", "rm_transactions", &mut problems);
    let listed = in_table("SELECT transfer_id FROM rm_transfers WHERE transfer_id = ANY($1)", transfers.clone());
    missing(&transfers, &listed.await?, "transfer", "rm_transfers", &mut problems);
    Ok(problems)
}

/// The ids among `ids` found as `payload.<event_type>.<field>` of a wallet event.
async fn ids_in_payloads(pool: &PgPool, event_type: &str, field: &str, ids: &[Uuid]) -> anyhow::Result<HashSet<Uuid>> {
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM (SELECT (canonical::jsonb -> 'payload' -> $1 ->> $2)::uuid AS id FROM events \
                         WHERE aggregate_type = 'Wallet' AND event_type = $1) e \
         WHERE id = ANY($3)",
    )
    .bind(event_type)
    .bind(field)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

fn missing(wanted: &[Uuid], found: &HashSet<Uuid>, kind: &str, place: &str, problems: &mut Problems) {
    for id in wanted.iter().filter(|id| !found.contains(id)) {
        problems.push(format!("acknowledged {kind} {id} has no {place}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Double postings
// ---------------------------------------------------------------------------------------------

async fn no_double_posting(pool: &PgPool) -> anyhow::Result<Problems> {
    let mut problems = Vec::new();
    // The movement's id: a reversal by what it reverses, so reversing twice shows too.
    let doubled: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "WITH money AS (SELECT aggregate_id, event_type, canonical::jsonb -> 'payload' -> event_type AS p \
                        FROM events WHERE aggregate_type = 'Wallet' AND event_type = ANY($1)) \
         SELECT aggregate_id, event_type, \
                COALESCE(p->>'original_transaction_id', p->>'transaction_id', p->>'withdrawal_id', \
                         p->>'transfer_id', p->>'purchase_id', p->>'capture_id', p->>'deposit_id', \
                         p->>'retirement_id') AS money_id, count(*) \
         FROM money GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1, 2, 3",
    )
    .bind(MONEY_EVENT_TYPES.map(str::to_string).to_vec())
    .fetch_all(pool)
    .await?;
    for (wallet, event_type, id, count) in doubled {
        let id = id.unwrap_or_else(|| "(none)".into());
        problems.push(format!("wallet {wallet}: {count} {event_type} events for {id}"));
    }
    let lines: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(
        "SELECT wallet_id, transaction_id, kind, count(*) FROM rm_wallet_entries \
         GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    for (wallet, id, kind, count) in lines {
        problems.push(format!("wallet {wallet}: {count} statement lines {kind} of {id}"));
    }
    // Postings are keyed by their event's position: a posting row must belong to a stored event.
    let orphans: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT p.position FROM rm_postings p WHERE NOT EXISTS \
           (SELECT 1 FROM events e WHERE e.position = p.position) ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for position in orphans {
        problems.push(format!("rm_postings holds position {position}, which is no event"));
    }
    let unbalanced: Vec<(Uuid, Decimal, Decimal)> = sqlx::query_as(
        "SELECT w.wallet_id, w.balance, COALESCE(l.total, 0) FROM rm_wallets w \
         LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM rm_wallet_entries GROUP BY 1) l USING (wallet_id) \
         WHERE w.balance <> COALESCE(l.total, 0) ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for (wallet, balance, lines) in unbalanced {
        problems.push(format!("wallet {wallet}: balance {balance}, statement lines sum to {lines}"));
    }
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// Sagas
// ---------------------------------------------------------------------------------------------

async fn sagas_finished(pool: &PgPool) -> anyhow::Result<Problems> {
    let open: Vec<(Uuid, String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT saga_id, kind, status, attempts, last_error FROM sagas \
         WHERE kind = ANY($1) AND status NOT IN ('completed', 'failed') ORDER BY created_at",
    )
    .bind(vec![sagas::TRANSFER_SAGA.to_string(), sagas::PURCHASE_SAGA.to_string()])
    .fetch_all(pool)
    .await?;
    Ok(open
        .into_iter()
        .map(|(id, kind, status, attempts, error)| {
            let error = error.map(|e| format!(", last error: {e}")).unwrap_or_default();
            format!("{kind} saga {id} is {status} after {attempts} attempts{error}")
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Trial balance
// ---------------------------------------------------------------------------------------------

async fn trial_balance(pool: &PgPool) -> anyhow::Result<Problems> {
    let mut problems = Vec::new();
    let sums: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT currency, sum(balance) FROM (SELECT currency, balance FROM rm_wallets \
                                             UNION ALL SELECT currency, balance FROM rm_system_accounts) a \
         GROUP BY 1 HAVING sum(balance) <> 0 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for (currency, sum) in sums {
        problems.push(format!("{currency}: wallets and system accounts sum to {sum}, not 0"));
    }
    // The journal: credits minus debits per account equal the balance its read model shows.
    let journal: Vec<(String, String, Decimal, Decimal)> = sqlx::query_as(
        "WITH moves AS (SELECT currency, credit_account AS account, amount FROM rm_postings \
                        UNION ALL SELECT currency, debit_account, -amount FROM rm_postings), \
              journal AS (SELECT currency, account, sum(amount) AS balance FROM moves GROUP BY 1, 2), \
              shown AS (SELECT currency, 'wallet:' || wallet_id AS account, balance FROM rm_wallets \
                        UNION ALL SELECT currency, 'system:' || account, balance FROM rm_system_accounts) \
         SELECT currency, account, COALESCE(j.balance, 0), COALESCE(s.balance, 0) \
         FROM journal j FULL JOIN shown s USING (currency, account) \
         WHERE COALESCE(j.balance, 0) <> COALESCE(s.balance, 0) ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (currency, account, posted, shown) in journal {
        problems.push(format!("{currency} {account}: the journal says {posted}, the read model {shown}"));
    }
    // Debits equal credits per currency. Each rm_postings row carries both sides, so this holds
    // by the table's shape; it stays as the auditor's check, summed side by side.
    let totals: Vec<(String, Decimal, Decimal)> = sqlx::query_as(
        "SELECT currency, COALESCE(sum(amount) FILTER (WHERE side = 'debit'), 0), \
                COALESCE(sum(amount) FILTER (WHERE side = 'credit'), 0) \
         FROM (SELECT currency, 'debit' AS side, amount FROM rm_postings \
               UNION ALL SELECT currency, 'credit', amount FROM rm_postings) s GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for (currency, debits, credits) in totals {
        if debits != credits {
            problems.push(format!("{currency}: journal debits {debits} and credits {credits} differ"));
        }
    }
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

async fn replay_equal(pool: &PgPool) -> anyhow::Result<Problems> {
    let mut problems = Vec::new();
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events").fetch_one(pool).await?;
    let all = projections::all();
    let checkpoints: BTreeMap<String, i64> = projections::checkpoints(pool).await?.into_iter().collect();
    for projection in &all {
        let reached = checkpoints.get(projection.name()).copied().unwrap_or(0);
        if reached != head {
            problems.push(format!("projection {} is at {reached}, the head at {head}", projection.name()));
        }
    }
    let store = Store::new(pool.clone());
    let report = projections::replay_into_schema(&store, &all, REPLAY_SCHEMA, head).await?;
    if report.position != head {
        problems.push(format!("the replay reached {}, the head is {head} (relay behind?)", report.position));
    }
    for table in all.iter().flat_map(|p| p.tables().iter().copied()) {
        let (only_live, only_replay): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM (SELECT * FROM public.{table} EXCEPT ALL \
                                           SELECT * FROM {REPLAY_SCHEMA}.{table}) a), \
                    (SELECT count(*) FROM (SELECT * FROM {REPLAY_SCHEMA}.{table} EXCEPT ALL \
                                           SELECT * FROM public.{table}) b)"
        ))
        .fetch_one(pool)
        .await?;
        if (only_live, only_replay) != (0, 0) {
            problems.push(format!("{table}: {only_live} rows only live, {only_replay} rows only in the replay"));
        }
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {REPLAY_SCHEMA} CASCADE")).execute(pool).await?;
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// Hash chains
// ---------------------------------------------------------------------------------------------

async fn chains_verify(pool: &PgPool) -> anyhow::Result<Problems> {
    let report = event_store::verify::verify(pool).await?;
    Ok(report.first_problem.into_iter().collect())
}
