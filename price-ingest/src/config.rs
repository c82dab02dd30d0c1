//! What the ingest needs to know: which providers, where, with which keys, and its limits.

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;

/// An API key: `Debug` prints a placeholder, so a key never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// CoinGecko's plans send their key in different headers: the free "demo" plan in
/// `x-cg-demo-api-key` (base `https://api.coingecko.com/api/v3`), paid plans in
/// `x-cg-pro-api-key` (base `https://pro-api.coingecko.com/api/v3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoinGeckoPlan {
    #[default]
    Demo,
    Pro,
}

impl CoinGeckoPlan {
    pub fn key_header(self) -> &'static str {
        match self {
            CoinGeckoPlan::Demo => "x-cg-demo-api-key",
            CoinGeckoPlan::Pro => "x-cg-pro-api-key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CoinGeckoConfig {
    /// Up to the API version, e.g. `https://api.coingecko.com/api/v3`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    pub plan: CoinGeckoPlan,
}

/// An OilPriceAPI-style endpoint for the EU carbon allowance (EUA) price in EUR.
#[derive(Debug, Clone)]
pub struct CarbonPriceConfig {
    /// Without the API version, e.g. `https://api.oilpriceapi.com`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
}

/// Timeouts and retries of one request.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// The whole request, from connecting to the last byte of the body.
    pub request_timeout: Duration,
    /// Attempts of one request when it answers 429 or 5xx, or times out.
    pub attempts_max: u32,
    /// First retry delay; doubled per attempt, with jitter.
    pub retry_delay_base: Duration,
    /// Longest wait between two attempts; a `Retry-After` beyond it ends the round instead
    /// (the provider's next poll then waits for it).
    pub retry_delay_max: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            attempts_max: 3,
            retry_delay_base: Duration::from_millis(500),
            retry_delay_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `None`: CoinGecko is not polled.
    pub coingecko: Option<CoinGeckoConfig>,
    /// `None`: the carbon price is not polled.
    pub carbon: Option<CarbonPriceConfig>,
    pub poll_interval: Duration,
    /// Longest delay before the next poll of a provider that keeps failing.
    pub failure_backoff_max: Duration,
    /// A polled price more than this many percent away from its feed's latest is refused.
    pub jump_max_pct: Decimal,
    pub http: HttpConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            coingecko: None,
            carbon: None,
            poll_interval: Duration::from_secs(60),
            failure_backoff_max: Duration::from_secs(900),
            jump_max_pct: Decimal::from(50),
            http: HttpConfig::default(),
        }
    }
}

impl IngestConfig {
    pub fn any_provider(&self) -> bool {
        self.coingecko.is_some() || self.carbon.is_some()
    }
}

/// A base URL with its trailing slashes removed, if it is an absolute http(s) URL.
pub fn normalise_base_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an http or https URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let config = CoinGeckoConfig {
            base_url: "https://api.coingecko.com/api/v3".into(),
            api_key: Some(ApiKey::new("CG-secret")),
            plan: CoinGeckoPlan::Demo,
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("CG-secret"), "{printed}");
        assert!(printed.contains("ApiKey(***)"));
    }

    #[test]
    fn base_urls_are_absolute_http_without_trailing_slash() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://api.coingecko.com/api/v3/", Some("https://api.coingecko.com/api/v3")),
            ("http://127.0.0.1:8091", Some("http://127.0.0.1:8091")),
            ("ftp://example.org", None),
            ("api.coingecko.com", None),
            ("https://example.org/?x=1", None),
        ];
        for (url, expected) in cases {
            assert_eq!(normalise_base_url(url).ok().as_deref(), *expected, "{url}");
        }
    }
}
