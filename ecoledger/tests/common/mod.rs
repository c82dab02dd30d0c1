//! Test harness: each test gets its own database and NATS prefix, and a real server on a
//! free port. Services that a test stops run privately on free ports.
#![allow(dead_code)]

pub mod chain;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use command_api::registration::{self, NewUser};
use domain::user::Role;
use ecoledger::configuration::{Component, Secret, ServeSettings, StoreSettings};
use ecoledger::startup::{self, Server};
use event_store::{Begun, CommandContext, Store};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-for-integration-tests";
pub const PASSWORD: &str = "a-long-test-password";
/// How long a test waits for something asynchronous before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Test databases and JetStream streams older than this are dropped by later runs.
const STALE_TEST_DATA_AGE_SECS: u64 = 2 * 3600;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/ecoledger".to_string())
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// Replaces the database name of a Postgres URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = &base[..base.rfind('/').expect("a database URL has a path")];
    match query {
        Some(query) => format!("{prefix}/{database}?{query}"),
        None => format!("{prefix}/{database}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// A fresh database with migrations applied.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn create() -> TestDb {
        TestDb::create_on(&database_url()).await
    }

    /// Creates a database on the server of `server_url`.
    pub async fn create_on(server_url: &str) -> TestDb {
        let admin_url = with_database(server_url, "postgres");
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("connect to postgres db");
        drop_stale_databases(&admin).await;
        let name = format!("ecoledger_test_{}_{}", unix_now(), Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create test database");
        admin.close().await;
        let url = with_database(server_url, &name);
        let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.expect("connect to test database");
        event_store::MIGRATOR.run(&pool).await.expect("migrations apply");
        TestDb { name, url, pool }
    }
}

async fn drop_stale_databases(admin: &PgPool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ecoledger_test_%'")
            .fetch_all(admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(u64::MAX);
        if unix_now().saturating_sub(created) > STALE_TEST_DATA_AGE_SECS {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin).await;
        }
    }
}

/// Deletes the JetStream streams of earlier test runs (`unique_prefix` names them
/// `T<12 hex>_EVENTS`) created more than `STALE_TEST_DATA_AGE_SECS` ago, as
/// `drop_stale_databases` does for databases: without it every test leaves its stream on the
/// shared server until the stream's seven-day `max_age` empties it (hundreds after a few runs).
/// Best effort: NATS unreachable or a stream another test process deleted first is no failure.
async fn drop_stale_test_streams(nats_url: &str) {
    use futures::TryStreamExt;
    let Ok(client) = async_nats::connect(nats_url).await else { return };
    let context = async_nats::jetstream::new(client);
    let Ok(streams) = context.streams().try_collect::<Vec<_>>().await else { return };
    let now = i64::try_from(unix_now()).expect("seconds since 1970 fit in i64");
    for info in streams {
        let age = now - info.created.unix_timestamp();
        if is_test_stream(&info.config.name) && age > STALE_TEST_DATA_AGE_SECS as i64 {
            let _ = context.delete_stream(&info.config.name).await;
        }
    }
}

/// Whether `name` is the events stream of a `unique_prefix`.
fn is_test_stream(name: &str) -> bool {
    let Some(id) = name.strip_prefix('T').and_then(|rest| rest.strip_suffix("_EVENTS")) else { return false };
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

pub fn unique_prefix() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Options for [`TestApp::spawn_with`].
#[derive(Clone)]
pub struct SpawnOptions {
    pub nats_url: String,
    pub components: Vec<Component>,
    pub snapshot_interval: i64,
    pub login_failures_max: i64,
    /// `ECOLEDGER_CHAIN_ADDRESS_COOLDOWN_SECS`; `None`: decided by the chain identity.
    pub chain_address_cooldown_secs: Option<u64>,
    /// CARBON per user and for everyone per 24 hours (the withdrawal limits).
    pub chain_withdrawal_daily_limits: (&'static str, &'static str),
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            nats_url: nats_url(),
            components: vec![Component::Api, Component::Relay, Component::Projections, Component::Sagas],
            snapshot_interval: event_store::store::SNAPSHOT_INTERVAL_DEFAULT,
            login_failures_max: 5,
            chain_address_cooldown_secs: None,
            chain_withdrawal_daily_limits: ("1000.000", "100000.000"),
        }
    }
}

/// A running EcoLedger on a free port, over its own database and NATS prefix.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub prefix: String,
    pub store: Store,
    pub settings: ServeSettings,
    server: Server,
}

/// A registered user with a token and the ids of their wallets by currency code.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub token: String,
    pub wallets: HashMap<String, Uuid>,
}

impl TestUser {
    pub fn wallet(&self, currency: &str) -> Uuid {
        self.wallets[currency]
    }
}

/// A response: status, headers and JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn position(&self) -> i64 {
        self.body["position"].as_i64().expect("a position in the body")
    }
}

pub fn serve_settings(db_url: &str, prefix: &str, options: &SpawnOptions) -> ServeSettings {
    ServeSettings {
        store: StoreSettings {
            database_url: db_url.parse::<Secret>().expect("infallible"),
            db_pool_max: 8,
            snapshot_interval: options.snapshot_interval,
        },
        nats_url: options.nats_url.clone(),
        nats_prefix: prefix.to_string(),
        http_addr: "127.0.0.1:0".to_string(),
        jwt_secret: Some(JWT_SECRET.parse().expect("infallible")),
        token_ttl_secs: 3600,
        login_failures_max: options.login_failures_max,
        login_failure_window_secs: 900,
        min_position_wait_ms: 5000,
        price_max_age_secs: 3600,
        fee_bps: 100,
        chain_address_cooldown_secs: options.chain_address_cooldown_secs,
        chain_withdrawal_user_daily_limit: options.chain_withdrawal_daily_limits.0.parse().expect("a decimal"),
        chain_withdrawal_global_daily_limit: options.chain_withdrawal_daily_limits.1.parse().expect("a decimal"),
        components: options.components.clone(),
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(SpawnOptions::default()).await
    }

    pub async fn spawn_with(options: SpawnOptions) -> TestApp {
        drop_stale_test_streams(&options.nats_url).await;
        let db = TestDb::create().await;
        TestApp::spawn_on(db, unique_prefix(), options).await
    }

    /// Starts a server over an existing database and prefix (a restart).
    pub async fn spawn_on(db: TestDb, prefix: String, options: SpawnOptions) -> TestApp {
        let settings = serve_settings(&db.url, &prefix, &options);
        let server = startup::start(&settings).await.expect("server starts");
        let store = Store::new(db.pool.clone());
        TestApp {
            base: format!("http://{}", server.address),
            client: reqwest::Client::new(),
            db,
            prefix,
            store,
            settings,
            server,
        }
    }

    /// Stops the server's tasks and hands back the database, for a restart.
    pub fn stop(self) -> (TestDb, String) {
        let db = TestDb { name: self.db.name.clone(), url: self.db.url.clone(), pool: self.db.pool.clone() };
        (db, self.prefix.clone())
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.request_with(method, path, token, body, &[]).await
    }

    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    /// Registers a user over the API and logs them in.
    pub async fn register(&self, username: &str) -> TestUser {
        let body = json!({"username": username, "email": format!("{username}@example.org"), "password": PASSWORD});
        let reply = self.request(Method::POST, "/api/v1/users", None, Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "register {username}: {:?}", reply.body);
        let id: Uuid = reply.body["user"]["id"].as_str().expect("user id").parse().expect("uuid");
        let wallets = reply.body["wallets"]
            .as_array()
            .expect("wallets")
            .iter()
            .map(|w| (w["currency"].as_str().unwrap().to_string(), w["id"].as_str().unwrap().parse().unwrap()))
            .collect();
        let token = self.login(username, PASSWORD).await;
        TestUser { id, username: username.to_string(), token, wallets }
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .request(
                Method::POST,
                "/api/v1/auth/token",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "login {username}: {:?}", reply.body);
        reply.body["access_token"].as_str().expect("token").to_string()
    }

    /// Creates a user with `role` the way `ecoledger admin create` does, and logs them in.
    pub async fn staff(&self, username: &str, role: Role) -> TestUser {
        let user = NewUser {
            user_id: Uuid::new_v4(),
            username: username.to_string(),
            email: format!("{username}@example.org"),
            display_name: None,
            password_hash: command_api::auth::hash_password(PASSWORD.to_string()).await.expect("hash"),
            roles: BTreeSet::from([role]),
        };
        let Begun::Fresh(uow) = self.store.begin(CommandContext::new("test"), None).await.expect("begin") else {
            unreachable!()
        };
        registration::register(*uow, user.clone()).await.expect("staff registered");
        let token = self.login(username, PASSWORD).await;
        TestUser { id: user.user_id, username: username.to_string(), token, wallets: HashMap::new() }
    }

    pub async fn admin(&self) -> TestUser {
        self.staff("admin", Role::Admin).await
    }

    /// Deposits as `admin` and returns the reply (asserting 201).
    pub async fn deposit(&self, admin: &TestUser, wallet: Uuid, amount: &str) -> Reply {
        let body = json!({"amount": amount, "reference": format!("ref-{}", Uuid::new_v4())});
        let reply = self.post(&format!("/api/v1/wallets/{wallet}/deposits"), &admin.token, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "deposit: {:?}", reply.body);
        reply
    }

    /// Waits until every projection's checkpoint reached `position`.
    pub async fn wait_for_projections(&self, position: i64) {
        let names: Vec<&str> = projections::all().iter().map(|p| p.name()).collect();
        let pool = self.db.pool.clone();
        eventually("projections to catch up", || {
            let pool = pool.clone();
            let names = names.clone();
            async move {
                let reached: Option<i64> = sqlx::query_scalar(
                    "SELECT min(COALESCE(c.position, 0)) FROM unnest($1::text[]) p(name) \
                     LEFT JOIN projection_checkpoints c ON c.name = p.name",
                )
                .bind(&names)
                .fetch_one(&pool)
                .await
                .ok()?;
                (reached? >= position).then_some(())
            }
        })
        .await;
    }

    /// The highest position written so far.
    pub async fn head_position(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .expect("query")
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.db.pool).await.expect("query")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for task in &self.server.tasks {
            task.abort();
        }
    }
}

/// A private NATS server with JetStream on a free port, for tests that stop it.
pub struct PrivateNats {
    pub port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> PrivateNats {
        let store_dir = std::env::temp_dir().join(format!("ecoledger-nats-{}", Uuid::new_v4().simple()));
        let mut nats = PrivateNats { port: free_port(), store_dir, child: None };
        nats.resume().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store directory.
    pub async fn resume(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (install the nats-server package)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        eventually("private NATS to accept connections", || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(&address).await.ok().map(|_| ()) }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

/// `ecoledger serve` from the built binary in a child process (killed on drop), and the base
/// URL it prints once listening.
pub async fn spawn_binary(db: &TestDb, prefix: &str, components: &str) -> (tokio::process::Child, String) {
    let mut child = serve_command(db, prefix, components).spawn().expect("the ecoledger binary starts");
    let base = wait_until_listening(&mut child).await;
    (child, base)
}

/// The command [`spawn_binary`] runs (logging errors only, stderr inherited, stdout piped for
/// [`wait_until_listening`]), for a test that sets more before spawning it.
pub fn serve_command(db: &TestDb, prefix: &str, components: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"));
    command
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", nats_url())
        .env("ECOLEDGER_NATS_PREFIX", prefix)
        .env("ECOLEDGER_HTTP_ADDR", "127.0.0.1:0")
        .env("ECOLEDGER_JWT_SECRET", JWT_SECRET)
        .env("ECOLEDGER_COMPONENTS", components)
        .env("ECOLEDGER_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Reads a served binary's piped stdout until it prints its base URL.
pub async fn wait_until_listening(child: &mut tokio::process::Child) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("stdout readable") {
            if let Some(base) = line.strip_prefix("ecoledger listening on ") {
                return base.to_string();
            }
        }
        panic!("ecoledger exited before listening");
    })
    .await
    .expect("ecoledger listens within the deadline")
}

/// The built `ecoledger` binary run with `args` and `envs` in a child process (killed on
/// drop), and what follows `ready_prefix` on the first stdout line that starts with it.
pub async fn spawn_ecoledger(
    args: &[&str],
    envs: &[(&str, &str)],
    ready_prefix: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"));
    command.args(args).env("ECOLEDGER_LOG", "error").stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the ecoledger binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let rest = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("stdout readable") {
            if let Some(rest) = line.strip_prefix(ready_prefix) {
                return rest.to_string();
            }
        }
        panic!("ecoledger {args:?} exited before printing {ready_prefix:?}");
    })
    .await
    .expect("ecoledger is ready within the deadline");
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, rest)
}

// The chain bridge (tests/chain_identity.rs).

/// The dev chain's block time in the tests: deployments take a few blocks.
pub const TEST_DEV_BLOCK_TIME_MS: u64 = 100;

/// Settings of a dev chain with its state under `data_dir`, mining every
/// [`TEST_DEV_BLOCK_TIME_MS`].
pub fn dev_chain_settings(data_dir: &std::path::Path) -> ecoledger::configuration::ChainSettings {
    ecoledger::configuration::ChainSettings {
        eth_dev_block_time_ms: TEST_DEV_BLOCK_TIME_MS,
        ..ecoledger::configuration::ChainSettings::dev(data_dir)
    }
}

impl TestApp {
    /// Starts a server with the chain bridge on `chain` over `db` (the database is shared, not
    /// moved: a start refused leaves it to the caller).
    pub async fn try_spawn_with_chain(
        db: &TestDb,
        prefix: &str,
        chain: &ecoledger::configuration::ChainSettings,
    ) -> anyhow::Result<TestApp> {
        TestApp::try_spawn_with_chain_running(db, prefix, chain, vec![Component::Api, Component::Bridge]).await
    }

    /// As [`TestApp::try_spawn_with_chain`], running `components`.
    pub async fn try_spawn_with_chain_running(
        db: &TestDb,
        prefix: &str,
        chain: &ecoledger::configuration::ChainSettings,
        components: Vec<Component>,
    ) -> anyhow::Result<TestApp> {
        let options = SpawnOptions { components, ..SpawnOptions::default() };
        let settings = serve_settings(&db.url, prefix, &options);
        let prices = ecoledger::configuration::PriceSettings::default();
        let server = startup::start_with_chain(&settings, &prices, chain).await?;
        let db = TestDb { name: db.name.clone(), url: db.url.clone(), pool: db.pool.clone() };
        Ok(TestApp {
            base: format!("http://{}", server.address),
            client: reqwest::Client::new(),
            store: Store::new(db.pool.clone()),
            db,
            prefix: prefix.to_string(),
            settings,
            server,
        })
    }

    /// The bridge this server runs.
    pub fn bridge(&self) -> &chain_bridge::Bridge {
        self.server.bridge.as_deref().expect("the server runs the chain bridge")
    }

    /// Stops the server's tasks and its dev chain, which writes its state.
    pub async fn stop_chain(mut self) {
        for task in &self.server.tasks {
            task.abort();
        }
        if let Some(bridge) = self.server.bridge.take() {
            tokio::task::spawn_blocking(move || bridge.stop()).await.expect("the dev chain stops");
        }
    }
}
