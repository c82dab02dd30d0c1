//! `/api/v1/retirements`: CARBON retired for good (wallet → `retired`), and its public
//! certificate. The words (beneficiary, reason) stay out of events; only the certificate's
//! hash goes on the chain, recorded by the bridge from the queue row written here.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::retirement::{Certificate, CERTIFICATE_UNIT};
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::UnitOfWork;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::routes::wallets::{parse_amount, wallet_not_found};
use crate::state::AppState;
use crate::views::{cursor, page_limit};

/// Longest beneficiary (a person's or an organisation's name).
const BENEFICIARY_LEN_MAX: usize = 200;
const REASON_LEN_MAX: usize = 500;
/// A consumption period is short free text: "2025", "2025-Q1", "2025-01/2025-06".
const CONSUMPTION_PERIOD_LEN_MAX: usize = 64;

/// ISO 3166-1 alpha-2 codes of the officially assigned countries and territories.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
    FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
    IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
    MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
    TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetirementRequest {
    pub wallet_id: Uuid,
    #[schema(example = "1.500")]
    pub amount: String,
    /// Who the retirement is for; shown on the public certificate.
    #[schema(example = "Acme GmbH")]
    pub beneficiary: String,
    #[schema(example = "Offsetting 2025 business travel")]
    pub reason: String,
    #[schema(example = "2025")]
    pub consumption_period: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(example = "DE")]
    pub country: Option<String>,
}

/// The validated words of a retirement.
#[derive(Debug, Clone)]
struct Details {
    beneficiary: String,
    reason: String,
    consumption_period: Option<String>,
    country: Option<String>,
}

impl Details {
    fn parse(request: &RetirementRequest) -> Result<Details, ApiError> {
        bounded_text("beneficiary", &request.beneficiary, BENEFICIARY_LEN_MAX)?;
        bounded_text("reason", &request.reason, REASON_LEN_MAX)?;
        if let Some(period) = &request.consumption_period {
            bounded_text("consumption_period", period, CONSUMPTION_PERIOD_LEN_MAX)?;
        }
        if let Some(country) = &request.country {
            if !is_iso_country(country) {
                return Err(ApiError::invalid_field("country", "invalid_country", "an ISO 3166-1 alpha-2 code, as DE"));
            }
        }
        Ok(Details {
            beneficiary: request.beneficiary.trim().to_string(),
            reason: request.reason.trim().to_string(),
            consumption_period: request.consumption_period.as_ref().map(|p| p.trim().to_string()),
            country: request.country.clone(),
        })
    }
}

fn is_iso_country(code: &str) -> bool {
    code.len() == 2 && ISO_3166_ALPHA2.split_whitespace().any(|known| known == code)
}

/// Present, at most `max` characters, no control characters.
fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let valid = !value.trim().is_empty() && value.chars().count() <= max && !value.chars().any(char::is_control);
    if valid {
        return Ok(());
    }
    Err(ApiError::invalid_field(field, "invalid_text", format!("1 to {max} printable characters")))
}

/// Retire CARBON for good: 201 with the retirement; its certificate is public at the
/// `Location`, and the bridge records its hash on the chain later (`chain_state`).
/// Refusals: `currency_not_carbon`, `insufficient_funds`, `wallet_frozen`,
/// `validation_failed` (422), `wallet_not_found` (404).
#[utoipa::path(post, path = "/api/v1/retirements", request_body = RetirementRequest, tag = "retirements", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Retired: {id, amount, status: completed, position}"),
              (status = 404, description = "wallet_not_found", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn retirements_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<RetirementRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let details = Details::parse(&request)?;
    let amount = parse_amount(&request.amount, Currency::Carbon)?;
    let user_id = caller.user_id;
    let input = CommandInput { actor: user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let (details, wallet_id) = (details.clone(), request.wallet_id);
        async move { retire(uow, user_id, wallet_id, amount, details).await }
    })
    .await
}

async fn retire(
    mut uow: UnitOfWork,
    user_id: Uuid,
    wallet_id: Uuid,
    amount: Amount,
    details: Details,
) -> Result<event_store::Committed, ApiError> {
    let retirement_id = domain::new_id();
    let decide = |wallet: &Wallet| match wallet.identity {
        Some(identity) if identity.owner_id == user_id => Ok(WalletCommand::Retire { retirement_id, amount }),
        _ => Err(wallet_not_found()),
    };
    uow.execute_with::<Wallet, ApiError>(&wallet_id.to_string(), decide, &()).await??;
    let now = uow.context().at;
    uow.stage_statement(
        "INSERT INTO retirement_details (retirement_id, wallet_id, user_id, beneficiary, reason, consumption_period, \
         country, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        arguments(|a| {
            a.add(retirement_id)?;
            a.add(wallet_id)?;
            a.add(user_id)?;
            a.add(details.beneficiary.clone())?;
            a.add(details.reason.clone())?;
            a.add(details.consumption_period.clone())?;
            a.add(details.country.clone())?;
            a.add(now)
        })?,
    );
    uow.stage_statement(
        "INSERT INTO chain_retirements (retirement_id, amount, queued_at, state) VALUES ($1, $2, $3, 'queued')",
        arguments(|a| {
            a.add(retirement_id)?;
            a.add(amount.value())?;
            a.add(now)
        })?,
    );
    let body = json!({
        "id": retirement_id,
        "status": "completed",
        "amount": Currency::Carbon.format(amount.value()),
        "unit": CERTIFICATE_UNIT,
    });
    commit_created(uow, body, format!("/api/v1/retirements/{retirement_id}")).await
}

/// A retirement certificate. The ledger part is the document `cert_hash` covers (SHA-256 of
/// its RFC 8785 bytes, lower-case hex): `id, amount, unit, beneficiary, reason,
/// consumption_period, country, retired_at, position, event_hash`. The chain part is `null`
/// until the bridge records it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    pub id: Uuid,
    #[schema(example = "1.500")]
    pub amount: String,
    #[schema(example = "tCO2e")]
    pub unit: String,
    pub beneficiary: String,
    pub reason: String,
    pub consumption_period: Option<String>,
    pub country: Option<String>,
    /// Credits carry no serial numbers in this ledger: always `null`.
    pub serial_range: Option<String>,
    /// RFC 3339 with microseconds, UTC (as in the hashed document).
    pub retired_at: String,
    /// Global position of the `CreditsRetired` event.
    pub position: i64,
    /// Lower-case hex of the `CreditsRetired` event's hash in the event store.
    pub event_hash: String,
    /// Lower-case hex of SHA-256 over the RFC 8785 bytes of the document.
    pub cert_hash: String,
    pub chain_id: Option<i64>,
    /// The `CarbonToken` contract that records it, 0x hex.
    pub contract: Option<String>,
    pub tx_hash: Option<String>,
    pub block_number: Option<i64>,
    /// `queued`, `submitted`, `mined` or `final`.
    pub chain_state: Option<String>,
}

/// A retirement's public certificate (no sign-in needed).
#[utoipa::path(get, path = "/api/v1/retirements/{id}", tag = "retirements",
    params(("min_position" = Option<i64>, Query, description = "Wait (bounded) for the read model to reach this position")),
    responses((status = 200, body = CertificateView), (status = 404, description = "retirement_not_found", body = crate::error::Problem)))]
pub async fn retirements_get(
    State(state): State<AppState>,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["chain"], consistency.0).await?;
    let row = sqlx::query(
        "SELECT r.retirement_id, r.amount, r.retired_at, r.position, d.beneficiary, d.reason, d.consumption_period, \
                d.country, e.hash AS event_hash, c.state AS chain_state, c.tx_hash, c.block_number, \
                i.chain_id, i.carbon_token_address \
         FROM rm_retirements r JOIN retirement_details d USING (retirement_id) JOIN events e ON e.position = r.position \
         LEFT JOIN chain_retirements c USING (retirement_id) LEFT JOIN chain_identity i ON true \
         WHERE r.retirement_id = $1",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await?
    .ok_or_else(|| ApiError::not_found("retirement_not_found", "no such retirement"))?;
    Ok(with_position(position, axum::Json(certificate_view(&row)?)))
}

fn certificate_view(row: &PgRow) -> Result<CertificateView, ApiError> {
    let certificate = Certificate {
        id: row.get("retirement_id"),
        amount: Amount::new(row.get("amount"), Currency::Carbon).map_err(|_| ApiError::internal())?,
        beneficiary: row.get("beneficiary"),
        reason: row.get("reason"),
        consumption_period: row.get("consumption_period"),
        country: row.get("country"),
        retired_at: row.get("retired_at"),
        position: row.get("position"),
        event_hash: hex::encode(row.get::<Vec<u8>, _>("event_hash")),
    };
    let document = certificate.document();
    let cert_hash = event_store::canonical::canonical_sha256(&document).map_err(|_| ApiError::internal())?;
    let text = |field: &str| document[field].as_str().map(str::to_string);
    let prefixed =
        |column: &str| row.get::<Option<Vec<u8>>, _>(column).map(|bytes| format!("0x{}", hex::encode(bytes)));
    Ok(CertificateView {
        id: certificate.id,
        amount: text("amount").unwrap_or_default(),
        unit: CERTIFICATE_UNIT.to_string(),
        serial_range: None,
        retired_at: text("retired_at").unwrap_or_default(),
        position: certificate.position,
        cert_hash: hex::encode(cert_hash),
        chain_id: row.get("chain_id"),
        contract: prefixed("carbon_token_address"),
        tx_hash: prefixed("tx_hash"),
        block_number: row.get("block_number"),
        chain_state: row.get("chain_state"),
        beneficiary: certificate.beneficiary,
        reason: certificate.reason,
        consumption_period: certificate.consumption_period,
        country: certificate.country,
        event_hash: certificate.event_hash,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RetirementQuery {
    /// Only retirements for this beneficiary (case-insensitive, exact).
    pub beneficiary: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
    pub min_position: Option<i64>,
}

/// A line of the public list: no user or wallet ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetirementListItem {
    pub id: Uuid,
    pub amount: String,
    pub unit: String,
    pub beneficiary: String,
    pub reason: String,
    pub consumption_period: Option<String>,
    pub country: Option<String>,
    pub retired_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetirementPage {
    pub items: Vec<RetirementListItem>,
    pub next_cursor: Option<String>,
}

/// Retirements, oldest first, public (no sign-in, no user or wallet ids).
#[utoipa::path(get, path = "/api/v1/retirements", tag = "retirements", params(RetirementQuery),
    responses((status = 200, body = RetirementPage), (status = 422, body = crate::error::Problem)))]
pub async fn retirements_list(
    State(state): State<AppState>,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<RetirementQuery>,
) -> Result<Response, ApiError> {
    let (after, limit) = (cursor::decode(query.cursor.as_deref())?, page_limit(query.limit)?);
    if let Some(beneficiary) = &query.beneficiary {
        bounded_text("beneficiary", beneficiary, BENEFICIARY_LEN_MAX)?;
    }
    let position = position_of(&state, &["chain"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT r.retirement_id, r.amount, r.retired_at, r.position, d.beneficiary, d.reason, d.consumption_period, \
                d.country \
         FROM rm_retirements r JOIN retirement_details d USING (retirement_id) \
         WHERE r.position > $1 AND ($3::text IS NULL OR lower(d.beneficiary) = lower($3)) \
         ORDER BY r.position LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .bind(query.beneficiary.as_deref().map(str::trim))
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<RetirementListItem> = rows
        .iter()
        .take(limit as usize)
        .map(|row| RetirementListItem {
            id: row.get("retirement_id"),
            amount: Currency::Carbon.format(row.get("amount")),
            unit: CERTIFICATE_UNIT.to_string(),
            beneficiary: row.get("beneficiary"),
            reason: row.get("reason"),
            consumption_period: row.get("consumption_period"),
            country: row.get("country"),
            retired_at: row.get("retired_at"),
            position: row.get("position"),
        })
        .collect();
    let next_cursor = more.then(|| items.last().map(|item| cursor::encode(item.position))).flatten();
    Ok(with_position(position, axum::Json(RetirementPage { items, next_cursor })))
}
