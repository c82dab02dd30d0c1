//! Requests to providers: a timeout on every request, bounded retries of 429, 5xx and
//! timeouts with exponential backoff and jitter, `Retry-After` honoured, bodies bounded.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::HttpConfig;

/// Largest response body read; a price answer is a few hundred bytes, a year of hourly
/// history under a megabyte.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest `Retry-After` honoured: beyond it a provider is treated as down, not as busy.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("answered HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response body over {RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
}

impl FetchError {
    /// A label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Connect(_) => "connect",
            FetchError::Status { status: 429, .. } => "rate_limited",
            FetchError::Status { status, .. } if *status >= 500 => "server_error",
            FetchError::Status { .. } => "client_error",
            FetchError::Malformed(_) => "malformed",
            FetchError::TooLarge => "too_large",
        }
    }

    /// Worth another attempt: the provider is busy or briefly unwell, not refusing us.
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout | FetchError::Connect(_) => true,
            FetchError::Status { status, .. } => *status == 429 || *status >= 500,
            FetchError::Malformed(_) | FetchError::TooLarge => false,
        }
    }

    /// How long the provider asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An HTTP client with the configured timeouts and retry policy.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    config: HttpConfig,
}

impl Http {
    pub fn new(config: HttpConfig) -> Result<Http, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("ecoledger-price-ingest/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client, config })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request `build` makes, again after transient failures, and parses the body
    /// as `T`. `source` names the provider in logs.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        source: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<T, FetchError> {
        let body = self.get_with_retries(source, build).await?;
        serde_json::from_slice(&body).map_err(|error| FetchError::Malformed(error.to_string()))
    }

    async fn get_with_retries(
        &self,
        source: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Vec<u8>, FetchError> {
        let attempts_max = self.config.attempts_max.max(1);
        let mut attempt = 1;
        loop {
            let error = match send_once(build(&self.client)).await {
                Ok(body) => return Ok(body),
                Err(error) => error,
            };
            if !error.is_transient() || attempt >= attempts_max {
                return Err(error);
            }
            let delay = retry_delay(&self.config, attempt, error.retry_after(), &mut rand::rng());
            // A provider asking for a longer pause than we wait between attempts: end the
            // round, and let the provider's next poll wait for it.
            let Some(delay) = delay else { return Err(error) };
            tracing::warn!(source, attempt, reason = error.reason(), %error, delay_ms = delay.as_millis() as u64, "retrying price request");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// One request: the status checked, the body read up to [`RESPONSE_BYTES_MAX`].
async fn send_once(request: RequestBuilder) -> Result<Vec<u8>, FetchError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status != StatusCode::OK {
        let retry_after = retry_after(response.headers(), SystemTime::now());
        return Err(FetchError::Status { status: status.as_u16(), retry_after });
    }
    if response.content_length().is_some_and(|length| length > RESPONSE_BYTES_MAX as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else if error.is_decode() || error.is_body() {
        FetchError::Malformed(error.to_string())
    } else {
        FetchError::Connect(error.without_url().to_string())
    }
}

/// The wait before attempt `attempt + 1`: `base × 2^(attempt-1)` plus up to as much again of
/// jitter (so many clients do not retry in step), at least the provider's `Retry-After`.
/// `None` when `Retry-After` asks for more than `retry_delay_max`.
pub fn retry_delay(
    config: &HttpConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Option<Duration> {
    if retry_after.is_some_and(|asked| asked > config.retry_delay_max) {
        return None;
    }
    let exponential = config.retry_delay_base.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = exponential.mul_f64(rng.random_range(0.0..=1.0));
    let backoff = exponential.saturating_add(jitter).min(config.retry_delay_max);
    Some(backoff.max(retry_after.unwrap_or_default()))
}

/// `Retry-After` in seconds or as an HTTP date, relative to `now`; bounded by
/// [`RETRY_AFTER_MAX`]. A date in the past is no wait.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or_default(),
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Mon, 05 Jan 2026 09:30:00 GMT").unwrap();
        let cases: &[(&str, Option<u64>)] = &[
            ("7", Some(7)),
            (" 0 ", Some(0)),
            ("Mon, 05 Jan 2026 09:30:12 GMT", Some(12)),
            ("Mon, 05 Jan 2026 09:29:00 GMT", Some(0)),
            ("Monday, 05-Jan-26 09:30:03 GMT", Some(3)),
            ("999999999", Some(RETRY_AFTER_MAX.as_secs())),
            ("-1", None),
            ("soon", None),
        ];
        for (value, expected) in cases {
            assert_eq!(retry_after(&headers(value), now).map(|d| d.as_secs()), *expected, "{value}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_delays_grow_with_jitter_and_honour_retry_after() {
        let config = HttpConfig {
            retry_delay_base: Duration::from_millis(100),
            retry_delay_max: Duration::from_secs(2),
            ..HttpConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=3 {
            let exponential = Duration::from_millis(100 * 2_u64.pow(attempt - 1));
            let delay = retry_delay(&config, attempt, None, &mut rng).unwrap();
            assert!(delay >= exponential && delay <= exponential * 2, "attempt {attempt}: {delay:?}");
        }
        assert_eq!(retry_delay(&config, 30, None, &mut rng), Some(Duration::from_secs(2)), "capped");
        let asked = Some(Duration::from_millis(1500));
        assert_eq!(retry_delay(&config, 1, asked, &mut rng), asked, "Retry-After is a floor");
        assert_eq!(retry_delay(&config, 1, Some(Duration::from_secs(3)), &mut rng), None, "too long: give up");
    }
}
