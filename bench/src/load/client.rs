//! The HTTP side: one keep-alive client against the ledger's `/api/v1`, answers read as JSON
//! with their problem `code`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use uuid::Uuid;

/// Longest a single request may take (a refusing server answers long before).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const LEDGER_POSITION_HEADER: &str = "ledger-position";

/// A status and a JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The `Ledger-Position` header: the position the query's read model has reached.
    pub ledger_position: Option<i64>,
    pub body: Value,
}

impl Reply {
    /// The problem's stable `code`, or `http_<status>` for an answer without one.
    pub fn code(&self) -> String {
        match self.body["code"].as_str() {
            Some(code) => code.to_string(),
            None => format!("http_{}", self.status.as_u16()),
        }
    }

    pub fn position(&self) -> Option<i64> {
        self.body["position"].as_i64()
    }
}

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: Url,
}

/// A registered user: id and wallet id by currency code.
pub struct Registered {
    pub user_id: Uuid,
    pub wallets: HashMap<String, Uuid>,
}

impl Api {
    pub fn new(base: &str, connections: usize) -> anyhow::Result<Api> {
        let base: Url = base.parse().with_context(|| format!("Failed to parse the URL {base}"))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Api { client, base })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Result<Reply> {
        let url = self.base.join(path).expect("paths are relative to the base URL");
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let ledger_position = response
            .headers()
            .get(LEDGER_POSITION_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let bytes = response.bytes().await?;
        Ok(Reply { status, ledger_position, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Result<Reply> {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Result<Reply> {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// Fails with a readable message unless the server answers its liveness probe.
    pub async fn check_live(&self) -> anyhow::Result<()> {
        let reply = self.send(Method::GET, "/health/live", None, None).await.with_context(|| {
            format!("Failed to reach EcoLedger at {} (is it serving? `make run` in another terminal)", self.base)
        })?;
        if !reply.status.is_success() {
            bail!("EcoLedger at {} answered {} to /health/live", self.base, reply.status);
        }
        Ok(())
    }

    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = json!({"username": username, "password": password});
        let reply = self.post("/api/v1/auth/token", None, &body).await.context("Failed to request a token")?;
        if reply.status != StatusCode::OK {
            bail!("logging in as {username} answered {} {}", reply.status, reply.code());
        }
        Ok(reply.body["access_token"].as_str().context("a token answer without access_token")?.to_string())
    }

    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<Registered> {
        let body =
            json!({"username": username, "email": format!("{username}@bench.example.org"), "password": password});
        let reply = self.post("/api/v1/users", None, &body).await.context("Failed to register a user")?;
        if reply.status != StatusCode::CREATED {
            bail!("registering {username} answered {} {}", reply.status, reply.code());
        }
        let user_id = parse_id(&reply.body["user"]["id"])?;
        let mut wallets = HashMap::new();
        for wallet in reply.body["wallets"].as_array().context("a registration without wallets")? {
            let currency = wallet["currency"].as_str().context("a wallet without currency")?;
            wallets.insert(currency.to_string(), parse_id(&wallet["id"])?);
        }
        Ok(Registered { user_id, wallets })
    }

    /// A request that must answer `expected`, for setup (which is not measured).
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
        expected: StatusCode,
    ) -> anyhow::Result<Reply> {
        let reply = self.send(method.clone(), path, Some(token), Some(body)).await?;
        if reply.status != expected {
            bail!("{method} {path} answered {} {} during setup", reply.status, reply.code());
        }
        Ok(reply)
    }
}

pub fn parse_id(value: &Value) -> anyhow::Result<Uuid> {
    value.as_str().context("a missing id")?.parse().context("an id that is not a UUID")
}
