//! What the scenarios need before the clock starts: users (registered once per run and shared
//! by the scenarios), their tokens, funded EUR wallets, and the sellers' listings. None of
//! this is measured; it runs with the same bounded concurrency as the load.

use std::sync::Arc;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use super::client::{parse_id, Api};

/// EUR put into every wallet that sends transfers or buys: far above what a run spends
/// (transfers move 0.01, purchases cost 1.01), so no request meets `insufficient_funds`.
const FUNDING_EUR: &str = "1000000";
/// Listings of the purchases scenario, one per seller: "a few listings, many buyers".
pub const LISTINGS: usize = 4;
/// CARBON each seller lists: enough for every purchase a bounded run can make.
const LISTING_TONNES: &str = "1000000";
/// Fixed price of the listings; with a 0.5 t purchase and the default 1 % fee, 1.01 EUR.
const LISTING_UNIT_PRICE_EUR: &str = "2.00";

/// A user the benchmark registered.
#[derive(Clone)]
pub struct BenchUser {
    pub id: Uuid,
    pub username: String,
    pub eur: Uuid,
    pub usd: Uuid,
    pub carbon: Uuid,
    pub token: Option<Arc<str>>,
}

impl BenchUser {
    pub fn token(&self) -> Arc<str> {
        self.token.clone().expect("tokens are fetched before a scenario that needs them")
    }
}

/// The run's users, grown on demand: registration (an Argon2 hash each) is the slow part of
/// setup, so scenarios share them.
pub struct UserPool {
    pub users: Vec<BenchUser>,
    funded: usize,
    /// Distinguishes this run's usernames and references from earlier runs' on the same server.
    tag: String,
    password: String,
}

impl UserPool {
    pub fn new(tag: &str) -> UserPool {
        UserPool {
            users: Vec::new(),
            funded: 0,
            tag: tag.to_string(),
            password: format!("bench-{}", Uuid::new_v4().simple()),
        }
    }

    /// Registers users until there are `count`.
    pub async fn ensure_users(&mut self, api: &Api, count: usize, concurrency: usize) -> anyhow::Result<()> {
        let start = self.users.len();
        let added: Vec<BenchUser> = stream::iter(start..count)
            .map(|index| register(api, format!("b{}-{index}", self.tag), &self.password))
            .buffered(concurrency)
            .try_collect()
            .await?;
        self.users.extend(added);
        Ok(())
    }

    /// Logs in the first `count` users that have no token yet.
    pub async fn ensure_tokens(&mut self, api: &Api, count: usize, concurrency: usize) -> anyhow::Result<()> {
        let password = self.password.clone();
        stream::iter(self.users[..count].iter_mut().filter(|user| user.token.is_none()))
            .map(|user| {
                let password = password.clone();
                async move {
                    user.token = Some(api.login(&user.username, &password).await?.into());
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await
    }

    /// Deposits [`FUNDING_EUR`] into the EUR wallets of the first `count` users, once.
    pub async fn ensure_funded(
        &mut self,
        api: &Api,
        admin: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let tag = self.tag.clone();
        stream::iter(self.users[self.funded.min(count)..count].iter())
            .map(|user| fund(api, admin, user.eur, FUNDING_EUR, format!("bench-{tag}-fund-{}", user.eur)))
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        self.funded = self.funded.max(count);
        Ok(())
    }

    /// Registers [`LISTINGS`] sellers, each listing CARBON at a fixed EUR price, and returns
    /// the listing ids.
    pub async fn listings(&self, api: &Api, admin: &str) -> anyhow::Result<Vec<Uuid>> {
        let mut listings = Vec::with_capacity(LISTINGS);
        for index in 0..LISTINGS {
            let seller = register(api, format!("s{}-{index}", self.tag), &self.password).await?;
            let token = api.login(&seller.username, &self.password).await?;
            let profile = json!({"is_seller": true, "is_buyer": false});
            let path = format!("/api/v1/users/{}/profile", seller.id);
            api.expect(Method::PUT, &path, &token, &profile, StatusCode::OK).await?;
            let reference = format!("bench-{}-carbon-{index}", self.tag);
            fund(api, admin, seller.carbon, LISTING_TONNES, reference).await?;
            let listing = json!({
                "quantity": LISTING_TONNES,
                "pricing": {"kind": "fixed", "unit_price": LISTING_UNIT_PRICE_EUR, "currency": "EUR"},
                "credit": {"project_id": format!("BENCH-{index}"), "registry": "Bench", "vintage": 2024},
            });
            let reply =
                api.expect(Method::POST, "/api/v1/announcements", &token, &listing, StatusCode::CREATED).await?;
            listings.push(parse_id(&reply.body["id"])?);
        }
        Ok(listings)
    }
}

async fn register(api: &Api, username: String, password: &str) -> anyhow::Result<BenchUser> {
    let registered = api.register(&username, password).await?;
    let wallet = |currency: &str| registered.wallets.get(currency).copied().context("a wallet missing at registration");
    Ok(BenchUser {
        id: registered.user_id,
        eur: wallet("EUR")?,
        usd: wallet("USD")?,
        carbon: wallet("CARBON")?,
        username,
        token: None,
    })
}

async fn fund(api: &Api, admin: &str, wallet: Uuid, amount: &str, reference: String) -> anyhow::Result<()> {
    let body = json!({"amount": amount, "reference": reference});
    let path = format!("/api/v1/wallets/{wallet}/deposits");
    api.expect(Method::POST, &path, admin, &body, StatusCode::CREATED).await.map(|_| ())
}
