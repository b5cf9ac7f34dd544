//! The managed LLM proxy's settings, read from the `--llm-*` flags.

use crate::config::ServerArgs;
use anyhow::{bail, Context};
use berth_core::money::{parse_micros, parse_price, Price, PriceTable};
use std::collections::BTreeMap;

/// An upstream provider: its base URL (`.../v1`) and the operator's key.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub base_url: String,
    pub key: Option<String>,
}

impl std::fmt::Debug for Upstream {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// A metered tool API: calls to `/tools/NAME/...` go to `base_url/...`.
#[derive(Clone)]
pub struct ToolUpstream {
    pub name: String,
    pub base_url: String,
    pub key: Option<String>,
    /// The header the key goes in (`None`: `Authorization: Bearer`).
    pub header: Option<String>,
    /// Micro-dollars per call.
    pub price: i64,
}

impl std::fmt::Debug for ToolUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolUpstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("price", &self.price)
            .finish_non_exhaustive()
    }
}

/// Everything the proxy needs to route, price and cap calls.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// `--llm-base-url`/`--llm-api-key`: models without a known `NAME/` prefix go here.
    pub default: Option<Upstream>,
    /// `--llm-upstream NAME=URL,KEY`, by name.
    pub named: BTreeMap<String, Upstream>,
    pub prices: PriceTable,
    /// `--tool-upstream`, by name.
    pub tools: BTreeMap<String, ToolUpstream>,
    /// Output tokens reserved for a call that names no limit.
    pub reserve_tokens: u32,
    /// `--billing`: managed usage is drawn from the wallet and refused when it is empty.
    pub billing: bool,
}

impl LlmConfig {
    /// The proxy's settings, `None` when no upstream is configured (no proxy runs and
    /// instances get no managed credentials). Bad flags are errors naming the flag.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Option<Self>> {
        let default = match &args.llm_base_url {
            Some(url) => Some(Upstream {
                name: "default".into(),
                base_url: base_url(url).context("--llm-base-url")?,
                key: args.llm_api_key.clone().filter(|k| !k.is_empty()),
            }),
            None if args.llm_api_key.is_some() => bail!("--llm-api-key is set without --llm-base-url"),
            None => None,
        };
        let mut named = BTreeMap::new();
        for spec in &args.llm_upstream {
            let u = upstream(spec).with_context(|| "--llm-upstream expects NAME=URL,KEY".to_string())?;
            if named.insert(u.name.clone(), u).is_some() {
                bail!("--llm-upstream names an upstream twice");
            }
        }
        let mut prices = PriceTable::default();
        for p in &args.llm_price {
            let (model, price) = parse_price(p).context("--llm-price")?;
            prices.models.insert(model, price);
        }
        if let Some(d) = &args.llm_price_default {
            let (i, o) = d.split_once(',').context("--llm-price-default expects IN,OUT (USD per million tokens)")?;
            prices.default = Some(Price {
                input_per_m: parse_micros(i).context("--llm-price-default")?,
                output_per_m: parse_micros(o).context("--llm-price-default")?,
            });
        }
        let mut tools = BTreeMap::new();
        for spec in &args.tool_upstream {
            let t = tool(spec).context("--tool-upstream expects NAME=URL,KEY,PRICE_PER_CALL[,HEADER]")?;
            if tools.insert(t.name.clone(), t).is_some() {
                bail!("--tool-upstream names a tool twice");
            }
        }
        if default.is_none() && named.is_empty() && tools.is_empty() {
            if !args.llm_price.is_empty() || args.llm_price_default.is_some() {
                tracing::warn!("--llm-price is set but no --llm-base-url or --llm-upstream: no managed LLM proxy runs");
            }
            return Ok(None);
        }
        Ok(Some(LlmConfig {
            default,
            named,
            prices,
            tools,
            reserve_tokens: args.llm_reserve_tokens.max(1),
            billing: args.billing,
        }))
    }

    /// The price of `model`: its own entry; for `NAME/MODEL` with a configured upstream
    /// NAME, the entry of `MODEL`; else the default.
    pub fn price(&self, model: &str) -> Option<berth_core::money::Price> {
        if let Some(p) = self.prices.models.get(model) {
            return Some(*p);
        }
        if let Some((name, rest)) = model.split_once('/') {
            if self.named.contains_key(name) {
                if let Some(p) = self.prices.models.get(rest) {
                    return Some(*p);
                }
            }
        }
        self.prices.default
    }

    /// The tool berth-agent offers as `web_search`: the one named `web_search`, else `search`.
    pub fn search_tool(&self) -> Option<&ToolUpstream> {
        self.tools.get("web_search").or_else(|| self.tools.get("search"))
    }

    /// The upstream a model goes to and the model name it is sent as:
    /// `NAME/MODEL` with a configured NAME goes to that upstream as `MODEL`; anything
    /// else to the default upstream (or the only named one) unchanged.
    pub fn route<'a>(&'a self, model: &'a str) -> Option<(&'a Upstream, &'a str)> {
        if let Some((name, rest)) = model.split_once('/') {
            if let Some(u) = self.named.get(name) {
                return Some((u, rest));
            }
        }
        match (&self.default, self.named.len()) {
            (Some(u), _) => Some((u, model)),
            (None, 1) => self.named.values().next().map(|u| (u, model)),
            _ => None,
        }
    }
}

/// A base URL without its trailing slash; only http and https.
fn base_url(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("`{url}`: only http and https upstreams");
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn tool(spec: &str) -> anyhow::Result<ToolUpstream> {
    let (name, rest) = spec.split_once('=').context("no `=`")?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("tool name `{name}`: letters, digits, - and _ only");
    }
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    let (url, key, price, header) = match parts.as_slice() {
        [url, key, price] => (*url, *key, *price, None),
        [url, key, price, header] => (*url, *key, *price, Some(header.to_string()).filter(|h| !h.is_empty())),
        _ => bail!("`{name}`: URL, KEY and PRICE_PER_CALL separated by commas"),
    };
    if let Some(h) = &header {
        reqwest::header::HeaderName::from_bytes(h.as_bytes()).with_context(|| format!("`{h}` is not a header name"))?;
    }
    Ok(ToolUpstream {
        name: name.to_string(),
        base_url: base_url(url)?,
        key: Some(key.to_string()).filter(|k| !k.is_empty()),
        header,
        price: parse_micros(price).with_context(|| format!("`{name}`: the price per call"))?,
    })
}

fn upstream(spec: &str) -> anyhow::Result<Upstream> {
    let (name, rest) = spec.split_once('=').context("no `=`")?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("upstream name `{name}`: letters, digits, - and _ only");
    }
    let (url, key) = match rest.split_once(',') {
        Some((u, k)) => (u, Some(k.trim().to_string()).filter(|k| !k.is_empty())),
        None => (rest, None),
    };
    Ok(Upstream { name: name.to_string(), base_url: base_url(url.trim())?, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn cfg(flags: &[&str]) -> anyhow::Result<Option<LlmConfig>> {
        let mut argv = vec!["berth"];
        argv.extend_from_slice(flags);
        LlmConfig::from_args(&Cli::try_parse_from(argv).unwrap().args)
    }

    #[test]
    fn models_route_by_upstream_prefix_else_to_the_default() {
        let c = cfg(&[
            "--llm-base-url",
            "http://up.example/v1/",
            "--llm-upstream",
            "anthropic=https://api.anthropic.example/v1,k2",
        ])
        .unwrap()
        .unwrap();
        let (u, m) = c.route("anthropic/claude").unwrap();
        assert_eq!((u.name.as_str(), m, u.key.as_deref()), ("anthropic", "claude", Some("k2")));
        let (u, m) = c.route("gpt-4o").unwrap();
        assert_eq!((u.base_url.as_str(), m), ("http://up.example/v1", "gpt-4o"));
        let (u, m) = c.route("other/x").unwrap();
        assert_eq!((u.name.as_str(), m), ("default", "other/x"));
        assert!(!format!("{u:?}").contains("k2"));
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(cfg(&[]).unwrap().is_none());
        let e = cfg(&["--llm-base-url", "ftp://x"]).unwrap_err();
        assert!(format!("{e:#}").contains("--llm-base-url"), "{e:#}");
        let e = cfg(&["--llm-base-url", "http://x/v1", "--llm-price", "m=1"]).unwrap_err();
        assert!(format!("{e:#}").contains("--llm-price"), "{e:#}");
        let e = cfg(&["--llm-upstream", "a b=http://x,k"]).unwrap_err();
        assert!(format!("{e:#}").contains("--llm-upstream"), "{e:#}");
        assert!(cfg(&["--llm-api-key", "k"]).is_err());
        let e = cfg(&["--tool-upstream", "search=http://s/api,k"]).unwrap_err();
        assert!(format!("{e:#}").contains("--tool-upstream"), "{e:#}");
        let c = cfg(&["--tool-upstream", "search=http://s/api/,k,0.005,X-Subscription-Token"]).unwrap().unwrap();
        let t = c.search_tool().unwrap();
        assert_eq!(
            (t.base_url.as_str(), t.price, t.header.as_deref()),
            ("http://s/api", 5_000, Some("X-Subscription-Token"))
        );
        assert!(!format!("{t:?}").contains("\"k\""));
    }
}
