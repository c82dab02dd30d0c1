//! The load loop of one scenario: `concurrency` clients send commands back to back until the
//! duration or the request budget runs out; every accepted command is then followed until the
//! read model shows it done. At most [`OUTSTANDING_PER_CLIENT`] × `concurrency` commands are
//! between "sent" and "seen done" at once, so a backlog of sagas slows the clients down
//! (a closed system) instead of growing without bound.
//!
//! Where the read model has got to is watched by one task for the whole scenario, not by a
//! `?min_position` query per command: the server answers such a query by re-reading the
//! checkpoints every 5 ms while it waits, a cost that would grow with the commands in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{Api, Reply};
use super::stats::{count, ErrorCounts};

/// Commands each client may have accepted but not yet seen done.
const OUTSTANDING_PER_CLIENT: usize = 4;
/// How often the watcher asks how far the read model has got: the precision of projection
/// lag and of a deposit's completion.
const WATCH_INTERVAL: Duration = Duration::from_millis(5);
/// A saga's status is polled from when the read model has the command, this soon and then
/// backing off (doubling) to [`POLL_INTERVAL_MAX`]: the precision of its completion time.
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(50);
/// A client pauses this long after a 5xx or a transport error, so a refusing server is not
/// hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// How a scenario sees that one of its commands is done.
#[derive(Debug, Clone)]
pub enum Track {
    /// Projected: the read model reached the command's position.
    Projected,
    /// A saga: `GET {collection}/{id}` (id from the 202) shows `completed` or `failed`.
    Saga(&'static str),
}

/// One command to send.
pub struct Command {
    pub path: String,
    pub token: Arc<str>,
    pub body: Value,
    pub track: Track,
}

/// Builds the `n`-th command of a scenario.
pub type Workload = Arc<dyn Fn(u64) -> Command + Send + Sync>;

pub struct Plan {
    pub concurrency: usize,
    pub duration: Duration,
    pub requests_max: u64,
    /// Commands per second at most, all clients together: the n-th is sent no sooner than
    /// n / rate seconds after the start.
    pub rate: Option<f64>,
    /// Longest the benchmark follows one command after it was sent.
    pub completion_timeout: Duration,
    /// The wallet whose query's `Ledger-Position` the watcher reads, and a token that sees it.
    pub probe_wallet: Uuid,
    pub probe_token: Arc<str>,
}

/// Raw measurements of one scenario.
#[derive(Default)]
pub struct Samples {
    pub sent: u64,
    pub accepted: u64,
    pub completed: u64,
    /// From sending a command to its 201/202.
    pub acceptance: Vec<Duration>,
    /// From sending a command to seeing it done in the read model.
    pub completion: Vec<Duration>,
    /// From the 201/202 to the watcher seeing the read model at the command's position.
    pub lag: Vec<Duration>,
    /// Refused or failed commands by code (`saga_failed:<reason>`, `completion_timeout`,
    /// `transport_error` included).
    pub errors: ErrorCounts,
    /// Answers other than 200 to the benchmark's own queries.
    pub poll_errors: ErrorCounts,
    /// GETs the benchmark sent (watcher included).
    pub queries: u64,
    /// Time from the first command sent until the clients stopped.
    pub sending: Duration,
    /// Time from the first command sent until the last one was seen done.
    pub completing: Duration,
}

type Shared = Arc<Mutex<Samples>>;
/// The highest read-model position seen, and when.
type Watermark = watch::Receiver<(i64, Instant)>;

fn record(samples: &Shared, update: impl FnOnce(&mut Samples)) {
    update(&mut samples.lock().expect("no panics while recording"));
}

/// Runs one scenario's load and waits (bounded) for every accepted command to be done.
pub async fn drive(api: &Api, plan: &Plan, workload: Workload) -> Samples {
    let samples: Shared = Arc::default();
    let started = Instant::now();
    let (watermark, watcher) = watch(api.clone(), plan, samples.clone(), started);
    let outstanding = Arc::new(Semaphore::new(plan.concurrency * OUTSTANDING_PER_CLIENT));
    let next = Arc::new(AtomicU64::new(0));
    let trackers = Arc::new(Mutex::new(JoinSet::new()));
    let mut clients = JoinSet::new();
    for _ in 0..plan.concurrency {
        let client = Client {
            api: api.clone(),
            workload: workload.clone(),
            samples: samples.clone(),
            watermark: watermark.clone(),
            outstanding: outstanding.clone(),
            next: next.clone(),
            trackers: trackers.clone(),
            started,
            deadline: started + plan.duration,
            requests_max: plan.requests_max,
            rate: plan.rate,
            completion_timeout: plan.completion_timeout,
        };
        clients.spawn(client.run());
    }
    while clients.join_next().await.is_some() {}
    let sending = started.elapsed();
    let mut trackers = std::mem::take(&mut *trackers.lock().expect("no panics while tracking"));
    while trackers.join_next().await.is_some() {}
    watcher.abort();
    let mut samples = std::mem::take(&mut *samples.lock().expect("no panics while recording"));
    samples.sending = sending;
    samples
}

/// Starts the task that polls the probe wallet's query and publishes its `Ledger-Position`.
fn watch(api: Api, plan: &Plan, samples: Shared, started: Instant) -> (Watermark, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = watch::channel((0, started));
    let (path, token) = (format!("/api/v1/wallets/{}", plan.probe_wallet), plan.probe_token.clone());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            record(&samples, |s| s.queries += 1);
            match api.get(&path, &token).await {
                Ok(Reply { status: StatusCode::OK, ledger_position: Some(position), .. }) => {
                    let seen = Instant::now();
                    sender.send_if_modified(|current| {
                        let advanced = position > current.0;
                        if advanced {
                            *current = (position, seen);
                        }
                        advanced
                    });
                }
                Ok(reply) => record(&samples, |s| count(&mut s.poll_errors, reply.code())),
                Err(_) => record(&samples, |s| count(&mut s.poll_errors, "transport_error")),
            }
        }
    });
    (receiver, task)
}

struct Client {
    api: Api,
    workload: Workload,
    samples: Shared,
    watermark: Watermark,
    outstanding: Arc<Semaphore>,
    next: Arc<AtomicU64>,
    trackers: Arc<Mutex<JoinSet<()>>>,
    started: Instant,
    deadline: Instant,
    requests_max: u64,
    rate: Option<f64>,
    completion_timeout: Duration,
}

impl Client {
    async fn run(self) {
        loop {
            let Ok(permit) = self.outstanding.clone().acquire_owned().await else { return };
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if let Some(rate) = self.rate {
                tokio::time::sleep_until((self.started + Duration::from_secs_f64(n as f64 / rate)).into()).await;
            }
            if Instant::now() >= self.deadline || n >= self.requests_max {
                return;
            }
            let command = (self.workload)(n);
            let sent = Instant::now();
            record(&self.samples, |s| s.sent += 1);
            match self.api.post(&command.path, Some(&command.token), &command.body).await {
                Ok(reply) if matches!(reply.status, StatusCode::CREATED | StatusCode::ACCEPTED) => {
                    self.accepted(command, reply, sent, permit);
                }
                Ok(reply) => {
                    record(&self.samples, |s| count(&mut s.errors, reply.code()));
                    if reply.status.is_server_error() {
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
                Err(_) => {
                    record(&self.samples, |s| count(&mut s.errors, "transport_error"));
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
    }

    fn accepted(&self, command: Command, reply: Reply, sent: Instant, permit: OwnedSemaphorePermit) {
        let accepted_at = Instant::now();
        record(&self.samples, |s| {
            s.accepted += 1;
            s.acceptance.push(accepted_at - sent);
        });
        let saga = match (&command.track, reply.body["id"].as_str()) {
            (Track::Projected, _) => Some(None),
            (Track::Saga(collection), Some(id)) => Some(Some(format!("{collection}/{id}"))),
            (Track::Saga(_), None) => None,
        };
        let (Some(saga), Some(position)) = (saga, reply.position()) else {
            record(&self.samples, |s| count(&mut s.errors, "accepted_without_id_or_position"));
            return;
        };
        let follow = Follow {
            api: self.api.clone(),
            token: command.token,
            saga,
            position,
            sent,
            accepted_at,
            deadline: sent + self.completion_timeout,
            samples: self.samples.clone(),
            started: self.started,
        };
        let watermark = self.watermark.clone();
        self.trackers.lock().expect("no panics while tracking").spawn(async move {
            follow.run(watermark).await;
            drop(permit);
        });
    }
}

/// Follows one accepted command until the read model shows it done.
struct Follow {
    api: Api,
    token: Arc<str>,
    /// The saga's resource; `None` when being projected is being done.
    saga: Option<String>,
    position: i64,
    sent: Instant,
    accepted_at: Instant,
    deadline: Instant,
    samples: Shared,
    started: Instant,
}

enum Seen {
    Pending,
    Completed,
    Failed(String),
}

impl Follow {
    async fn run(self, mut watermark: Watermark) {
        let reached = tokio::time::timeout_at(self.deadline.into(), watermark.wait_for(|w| w.0 >= self.position));
        let projected_at = match reached.await {
            Ok(Ok(seen)) => seen.1,
            _ => return self.timed_out(),
        };
        record(&self.samples, |s| s.lag.push(projected_at.saturating_duration_since(self.accepted_at)));
        let Some(path) = &self.saga else { return self.done(Seen::Completed, projected_at) };
        // Projections apply a batch one after the other, so the saga's own read model may be a
        // few milliseconds behind the watched one: the first query waits for it on the server.
        let mut query = format!("{path}?min_position={}", self.position);
        let mut interval = POLL_INTERVAL_MIN;
        loop {
            if Instant::now() >= self.deadline {
                return self.timed_out();
            }
            record(&self.samples, |s| s.queries += 1);
            let answer = self.api.get(&query, &self.token).await;
            query.clone_from(path);
            let seen = match answer {
                Ok(reply) if reply.status == StatusCode::OK => status(&reply),
                Ok(reply) => {
                    record(&self.samples, |s| count(&mut s.poll_errors, reply.code()));
                    Seen::Pending
                }
                Err(_) => {
                    record(&self.samples, |s| count(&mut s.poll_errors, "transport_error"));
                    Seen::Pending
                }
            };
            if !matches!(seen, Seen::Pending) {
                return self.done(seen, Instant::now());
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(POLL_INTERVAL_MAX);
        }
    }

    fn done(&self, seen: Seen, at: Instant) {
        record(&self.samples, |s| match seen {
            Seen::Completed => {
                s.completed += 1;
                s.completion.push(at.saturating_duration_since(self.sent));
                s.completing = s.completing.max(at.saturating_duration_since(self.started));
            }
            Seen::Failed(reason) => count(&mut s.errors, format!("saga_failed:{reason}")),
            Seen::Pending => unreachable!("done is called with a final status"),
        });
    }

    fn timed_out(&self) {
        record(&self.samples, |s| count(&mut s.errors, "completion_timeout"));
    }
}

fn status(reply: &Reply) -> Seen {
    match reply.body["status"].as_str() {
        Some("completed") => Seen::Completed,
        Some("failed") => Seen::Failed(reply.body["reason"].as_str().unwrap_or("unknown").to_string()),
        _ => Seen::Pending,
    }
}
