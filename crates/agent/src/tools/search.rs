//! `web_search`: offered when berth's managed proxy has a search upstream
//! (`BERTH_WEB_SEARCH_URL`, set by berth). The query goes to that URL as
//! `GET ?q=QUERY&count=N` with the instance's managed token; the operator's search API
//! answers (through the proxy, which charges the call against the instance's budget),
//! and its answer is handed to the model as it came, cut to the output cap.

use std::time::Duration;

/// Where searches go and with what token.
#[derive(Debug, Clone)]
pub struct WebSearch {
    pub url: String,
    pub token: Option<String>,
}

impl WebSearch {
    /// From `BERTH_WEB_SEARCH_URL` and `BERTH_TOOLS_TOKEN` (else `BERTH_LLM_API_KEY`);
    /// `None` when unset.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let url = var("BERTH_WEB_SEARCH_URL")?;
        Some(WebSearch { url, token: var("BERTH_TOOLS_TOKEN").or_else(|| var("BERTH_LLM_API_KEY")) })
    }
}

/// Runs one search; the answer (or what went wrong) as text for the model.
pub async fn run(search: &WebSearch, query: &str, count: u64, cap: usize) -> String {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(30)).build() {
        Ok(h) => h,
        Err(e) => return format!("error: {e}"),
    };
    let mut req = http.get(&search.url).query(&[("q", query), ("count", &count.clamp(1, 20).to_string())]);
    if let Some(token) = &search.token {
        req = req.bearer_auth(token);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return format!("error: the search service could not be reached ({e})"),
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let mut text = if status.is_success() {
        body
    } else if status.as_u16() == 402 {
        format!("error: web search refused: the budget is exhausted ({body})")
    } else {
        format!("error: the search service answered {status}: {body}")
    };
    crate::ids::cut(&mut text, cap, "\n[cut]");
    text
}
