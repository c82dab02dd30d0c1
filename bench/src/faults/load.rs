//! The load a fault run drives over HTTP: users registered and funded, then concurrent
//! transfers with some deposits mixed in. Each command carries an `Idempotency-Key` and is sent
//! again with it after a failure, as a careful client would; what answers 201/202 is
//! acknowledged, and every failed attempt is tallied by status and code with its latency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::invariants::Acknowledged;

/// A client gives up on one request after this long (a hang shows as `timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Sends of one command (its first and the repeats with the same key) before giving up.
const ATTEMPTS_MAX: u32 = 40;
/// Pause before repeating a failed command: paces retries, it waits for nothing.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Users registered (or funded) at once during setup.
const SETUP_CONCURRENCY: usize = 8;
/// Share of the load's commands that are deposits (the rest are transfers), in percent.
const DEPOSIT_PERCENT: u32 = 15;
pub const PASSWORD: &str = "fault-run-password-not-secret";
/// Each user's opening deposit.
const OPENING_DEPOSIT: &str = "1000.00";

/// What one send came back with.
enum Sent {
    Answer(u16, Value),
    /// No HTTP answer: `connect`, `timeout` or `transport` (reset, closed mid-response).
    NoAnswer(&'static str),
}

#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: String) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(CONNECT_TIMEOUT).build()?;
        Ok(Http { base, client })
    }

    async fn post(&self, path: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> Sent {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.json::<Value>().await {
                    Ok(body) => Sent::Answer(status, body),
                    Err(error) if error.is_timeout() => Sent::NoAnswer("timeout"),
                    Err(_) => Sent::Answer(status, Value::Null),
                }
            }
            Err(error) if error.is_timeout() => Sent::NoAnswer("timeout"),
            Err(error) if error.is_connect() => Sent::NoAnswer("connect"),
            Err(_) => Sent::NoAnswer("transport"),
        }
    }

    /// A setup call that must succeed with `expected`: repeated (same key) while it fails.
    async fn must(&self, path: &str, token: Option<&str>, body: Value, expected: u16) -> anyhow::Result<Value> {
        let key = Uuid::new_v4().to_string();
        let mut last = String::new();
        for _ in 0..ATTEMPTS_MAX {
            match self.post(path, token, Some(&key), &body).await {
                Sent::Answer(status, body) if status == expected => return Ok(body),
                Sent::Answer(status, body) if status < 500 && status != 409 => {
                    bail!("POST {path} answered {status}: {body}")
                }
                Sent::Answer(status, body) => last = format!("{status} {body}"),
                Sent::NoAnswer(kind) => last = kind.to_string(),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        bail!("POST {path} kept failing: {last}")
    }

    async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = json!({"username": username, "password": password});
        let reply = self.must("/api/v1/auth/token", None, body, 200).await?;
        reply["access_token"].as_str().map(str::to_string).context("no access_token in the login reply")
    }
}

/// A registered user: their token and EUR wallet.
#[derive(Debug, Clone)]
pub struct Party {
    pub username: String,
    pub token: String,
    pub eur_wallet: Uuid,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub acknowledged: Vec<Acknowledged>,
    /// Every send, first or repeated.
    pub attempts: u64,
    /// Failed sends by `"<status> <code>"` or the transport failure.
    pub failed_by_code: BTreeMap<String, u64>,
    pub max_failure_latency: Duration,
    pub max_success_latency: Duration,
    /// Commands that were neither acknowledged nor refused after every attempt.
    pub gave_up: u64,
    /// Commands refused for good (4xx, e.g. `insufficient_funds`).
    pub refused: u64,
}

impl Tally {
    fn failure(&mut self, code: String, latency: Duration) {
        *self.failed_by_code.entry(code).or_default() += 1;
        self.max_failure_latency = self.max_failure_latency.max(latency);
    }

    pub fn failures(&self) -> u64 {
        self.failed_by_code.values().sum()
    }
}

pub type SharedTally = Arc<Mutex<Tally>>;

/// Registers `count` users, logs them in and gives each an opening deposit (acknowledged in
/// `tally`). Returns the admin's token and the users.
pub async fn setup(
    http: &Http,
    admin_password: &str,
    count: usize,
    tally: &SharedTally,
) -> anyhow::Result<(String, Vec<Party>)> {
    let admin = http.login(super::ledger::ADMIN_USERNAME, admin_password).await?;
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let parties: Vec<Party> = stream::iter(0..count)
        .map(|i| register(http, format!("u{run}{i}")))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    stream::iter(&parties)
        .map(|party| async {
            let body = deposit_body(OPENING_DEPOSIT);
            let reply = http.must(&deposit_path(party.eur_wallet), Some(&admin), body, 201).await?;
            tally.lock().expect("tally").acknowledged.push(Acknowledged::deposit(id_of(&reply, "transaction_id")?));
            anyhow::Ok(())
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok((admin, parties))
}

async fn register(http: &Http, username: String) -> anyhow::Result<Party> {
    let body = json!({"username": username, "email": format!("{username}@example.org"), "password": PASSWORD});
    let reply = http.must("/api/v1/users", None, body, 201).await?;
    let eur_wallet = reply["wallets"]
        .as_array()
        .and_then(|wallets| wallets.iter().find(|w| w["currency"] == "EUR"))
        .and_then(|w| w["id"].as_str())
        .and_then(|id| id.parse().ok())
        .context("no EUR wallet in the registration reply")?;
    let token = http.login(&username, PASSWORD).await?;
    Ok(Party { username, token, eur_wallet })
}

fn deposit_path(wallet: Uuid) -> String {
    format!("/api/v1/wallets/{wallet}/deposits")
}

fn deposit_body(amount: &str) -> Value {
    json!({"amount": amount, "reference": format!("fault-{}", Uuid::new_v4())})
}

fn id_of(reply: &Value, field: &str) -> anyhow::Result<Uuid> {
    reply[field].as_str().and_then(|id| id.parse().ok()).with_context(|| format!("no {field} in {reply}"))
}

/// One command of the load, built once so its repeats send the same body and key.
struct Command {
    path: String,
    token: String,
    body: Value,
    key: String,
    /// The field of a success's body holding the id to acknowledge, and how.
    acknowledge: fn(Uuid) -> Acknowledged,
    id_field: &'static str,
}

fn next_command(admin: &str, parties: &[Party]) -> Command {
    let mut rng = rand::rng();
    let key = Uuid::new_v4().to_string();
    if rng.random_range(0..100) < DEPOSIT_PERCENT {
        let to = &parties[rng.random_range(0..parties.len())];
        return Command {
            path: deposit_path(to.eur_wallet),
            token: admin.to_string(),
            body: deposit_body("10.00"),
            key,
            acknowledge: Acknowledged::deposit,
            id_field: "transaction_id",
        };
    }
    let from = rng.random_range(0..parties.len());
    let to = (from + rng.random_range(1..parties.len())) % parties.len();
    let cents: i64 = rng.random_range(1..=200);
    let amount = rust_decimal::Decimal::new(cents, 2).to_string();
    let body = json!({"from_wallet_id": parties[from].eur_wallet, "amount": amount,
                      "to_username": parties[to].username, "currency": "EUR"});
    Command {
        path: "/api/v1/transfers".into(),
        token: parties[from].token.clone(),
        body,
        key,
        acknowledge: Acknowledged::transfer,
        id_field: "id",
    }
}

/// Sends `command` until it is acknowledged, refused for good, or out of attempts.
async fn drive(http: &Http, command: Command, tally: &SharedTally) {
    for _ in 0..ATTEMPTS_MAX {
        let started = Instant::now();
        let sent = http.post(&command.path, Some(&command.token), Some(&command.key), &command.body).await;
        if !record(&command, sent, started.elapsed(), &mut tally.lock().expect("tally")) {
            return;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    tally.lock().expect("tally").gave_up += 1;
}

/// Tallies one send; true when the command is worth sending again.
fn record(command: &Command, sent: Sent, latency: Duration, tally: &mut Tally) -> bool {
    tally.attempts += 1;
    match sent {
        Sent::Answer(status @ (201 | 202), body) => {
            match id_of(&body, command.id_field) {
                Ok(id) => tally.acknowledged.push((command.acknowledge)(id)),
                Err(_) => tally.failure(format!("{status} without an id"), latency),
            }
            tally.max_success_latency = tally.max_success_latency.max(latency);
            false
        }
        Sent::Answer(status, body) => {
            let code = body["code"].as_str().unwrap_or("-");
            tally.failure(format!("{status} {code}"), latency);
            // A refusal by a rule is final; 409 in progress, 429 and 5xx are worth a repeat.
            let definitive = (400..500).contains(&status) && status != 409 && status != 429;
            tally.refused += u64::from(definitive);
            !definitive
        }
        Sent::NoAnswer(kind) => {
            tally.failure(kind.to_string(), latency);
            true
        }
    }
}

/// Runs `concurrency` clients sending commands until `until`.
pub async fn run(http: &Http, admin: &str, parties: &[Party], concurrency: usize, until: Instant, tally: &SharedTally) {
    let client = |_| async move {
        while Instant::now() < until {
            drive(http, next_command(admin, parties), tally).await;
        }
    };
    futures::future::join_all((0..concurrency).map(client)).await;
}
