//! OpenClaw behind the Responses API.
//!
//! OpenClaw is a long-running Gateway: its one-shot CLI (`openclaw agent --local`)
//! spends some 20 s starting before each turn's first model call, where a running
//! Gateway answers in well under a second. So the first OpenClaw turn starts
//! `openclaw gateway run` (on loopback, its OpenResponses endpoint on, as the tool
//! user with `HOME` the instance's home, so its sessions live in `~/.openclaw`) and
//! keeps it for the turns after; a Gateway that died, or a turn for another model or
//! endpoint, starts a new one. Each turn is a streamed `POST /v1/responses` to it in
//! the session `x-openclaw-session-key` names (chosen on the session's first turn and
//! kept with the berth session). An instance whose agent is OpenClaw first (the
//! `openclaw` template) starts its Gateway when berth-agent starts ([`prestart`]), so
//! that its first turn does not wait for it either.
//!
//! The Gateway's own stream shows its text but not its work (the tools it runs), so
//! its model traffic goes through a relay of berth-agent's (`crate::relay`), which
//! relays each model answer as it is streamed (text deltas, tool calls) and the
//! results of the tools from the next request; the Gateway's `response.completed`
//! ends the turn. The Gateway is given no key: the relay adds it. Turns take turns
//! (the relay's events belong to one turn at a time).

use crate::driver::{DriverEvent, Launch};
use crate::provider::ProviderEvent;
use crate::relay::Relay;
use crate::tools::ToolUser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The Gateway of this instance, once an OpenClaw turn has started it; held for
/// the length of each turn.
static GATEWAY: tokio::sync::Mutex<Option<Gateway>> = tokio::sync::Mutex::const_new(None);

/// How long a starting Gateway may take to answer.
const START_WITHIN: Duration = Duration::from_secs(300);

/// A turn's settings, owned (the turn runs on a task of its own).
struct Turn {
    bin: PathBuf,
    prompt: String,
    model: String,
    resume: Option<String>,
    workdir: PathBuf,
    user: Option<ToolUser>,
    base_url: String,
    api_key: Option<String>,
    instructions: Option<String>,
    http: reqwest::Client,
}

impl Turn {
    fn new(bin: &Path, l: &Launch<'_>) -> Self {
        Turn {
            bin: bin.to_path_buf(),
            prompt: l.prompt.to_string(),
            model: l.model.to_string(),
            resume: l.resume.map(str::to_string),
            workdir: l.workdir.to_path_buf(),
            user: l.user,
            base_url: l.base_url.trim_end_matches('/').to_string(),
            api_key: l.api_key.map(str::to_string),
            instructions: l.instructions.filter(|i| !i.trim().is_empty()).map(str::to_string),
            http: l.http.clone(),
        }
    }
}

/// A running `openclaw gateway run`.
struct Gateway {
    child: tokio::process::Child,
    port: u16,
    relay: Relay,
    /// What it was started for: another model or endpoint needs another Gateway.
    model: String,
    upstream: (String, Option<String>),
    config: PathBuf,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Starts an OpenClaw turn; its events arrive on the receiver. A turn whose client
/// went away stops (the Gateway stays).
pub fn start(bin: &Path, l: &Launch<'_>) -> mpsc::Receiver<DriverEvent> {
    let turn = Turn::new(bin, l);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = run(turn, tx.clone()) => outcome,
            () = tx.closed() => return,
        };
        if let Err(why) = outcome {
            let _ = tx.send(DriverEvent::Done(Err(why))).await;
        }
    });
    rx
}

/// Starts the Gateway ahead of the first turn, for the default model; a failure is
/// logged (the first turn tries again and reports it).
pub async fn prestart(bin: &Path, state: &crate::state::AppState) {
    let llm = &state.config.llm;
    let Some(model) = &llm.default_model else { return };
    let launch = Launch {
        prompt: "",
        model,
        resume: None,
        workdir: &state.config.workdir,
        user: state.config.tool_user,
        base_url: &llm.openai_base_url,
        api_key: llm.openai_api_key.as_deref(),
        instructions: None,
        http: state.http(),
    };
    let t = Turn::new(bin, &launch);
    let mut held = GATEWAY.lock().await;
    if held.is_none() {
        match Gateway::start(&t).await {
            Ok(g) => *held = Some(g),
            Err(e) => tracing::warn!(error = %e, "OpenClaw's Gateway did not start ahead of the first turn"),
        }
    }
}

async fn run(t: Turn, tx: mpsc::Sender<DriverEvent>) -> Result<(), String> {
    let mut held = GATEWAY.lock().await;
    if !held.as_mut().is_some_and(|g| g.fits(&t)) {
        *held = None;
        *held = Some(Gateway::start(&t).await?);
    }
    let Some(gateway) = held.as_mut() else { return Err("OpenClaw's Gateway is not running".into()) };
    let session = t.resume.clone().unwrap_or_else(|| crate::ids::new_id("berth"));
    let _ = tx.send(DriverEvent::Session(session.clone())).await;
    gateway.relay.begin(tx.clone());
    let outcome = gateway.turn(&t, &session, &tx).await;
    gateway.relay.end();
    outcome
}

impl Gateway {
    /// Whether it is still running, for this model and endpoint.
    fn fits(&mut self, t: &Turn) -> bool {
        matches!(self.child.try_wait(), Ok(None))
            && self.model == t.model
            && self.upstream.0 == t.base_url
            && self.upstream.1 == t.api_key
    }

    async fn start(t: &Turn) -> Result<Self, String> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("OpenClaw's Gateway could not be started: {what}: {e}");
        let relay = Relay::start(&t.base_url, t.api_key.as_deref(), t.http.clone()).map_err(|e| fail("relay", &e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| fail("a free port", &e))?
            .port();
        // One model provider, `berth`, at the relay (all it knows of the endpoint).
        let config = json!({
            "models": {"mode": "replace", "providers": {"berth": {
                "baseUrl": relay.base_url(),
                "apiKey": "berth-relay",
                "api": "openai-completions",
                "models": [{"id": t.model, "name": t.model, "reasoning": false, "input": ["text"],
                    "contextWindow": 128000, "maxTokens": 8192}],
            }}},
            "agents": {"defaults": {"model": {"primary": format!("berth/{}", t.model)}}},
            "gateway": {"mode": "local", "port": port, "bind": "loopback", "auth": {"mode": "none"},
                "http": {"endpoints": {"responses": {"enabled": true}}}},
        });
        let dir = std::env::temp_dir();
        let config_path = dir.join(format!("berth-openclaw-{port}.json"));
        let log = dir.join(format!("berth-openclaw-{port}.log"));
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap_or_default())
            .map_err(|e| fail("its configuration", &e))?;
        let out = std::fs::File::create(&log).map_err(|e| fail("its log", &e))?;
        let err = out.try_clone().map_err(|e| fail("its log", &e))?;
        let mut cmd = tokio::process::Command::new(&t.bin);
        cmd.args(["gateway", "run"])
            .env("OPENCLAW_CONFIG_PATH", &config_path)
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .current_dir(&t.workdir)
            .env("HOME", &t.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        crate::tools::confine::confine(&mut cmd, t.user);
        let child = cmd.spawn().map_err(|e| fail(&t.bin.display().to_string(), &e))?;
        let mut gateway = Gateway {
            child,
            port,
            relay,
            model: t.model.clone(),
            upstream: (t.base_url.clone(), t.api_key.clone()),
            config: config_path,
            log,
        };
        gateway.ready(t).await?;
        Ok(gateway)
    }

    /// Waits until it answers.
    async fn ready(&mut self, t: &Turn) -> Result<(), String> {
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/v1/models", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("OpenClaw's Gateway exited while starting ({status}): {}", self.log_tail()));
            }
            let up = t.http.get(&url).timeout(Duration::from_secs(2)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if started.elapsed() > START_WITHIN {
                return Err(format!("OpenClaw's Gateway did not answer within {START_WITHIN:?}: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines of its output.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// One turn: the request, then its stream until the Gateway says how it ended.
    async fn turn(&mut self, t: &Turn, session: &str, tx: &mpsc::Sender<DriverEvent>) -> Result<(), String> {
        let mut body = json!({"model": "openclaw", "input": t.prompt, "stream": true});
        if let Some(extra) = &t.instructions {
            body["instructions"] = json!(extra);
        }
        let url = format!("http://127.0.0.1:{}/v1/responses", self.port);
        let mut resp = t
            .http
            .post(&url)
            .header("x-openclaw-session-key", session)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("OpenClaw's Gateway did not answer: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let why = crate::provider::error_detail(&resp.text().await.unwrap_or_default());
            return Err(format!("OpenClaw's Gateway answered {status}: {why}"));
        }
        let mut parser = berth_sse::Decoder::default();
        loop {
            let chunk = resp.chunk().await.map_err(|e| format!("OpenClaw's Gateway broke off the turn: {e}"))?;
            let events = match &chunk {
                Some(bytes) => parser.feed(bytes),
                None => parser.finish().into_iter().collect(),
            };
            for ev in events {
                let Ok(v) = serde_json::from_str::<Value>(ev.data.trim()) else { continue };
                match ending(&v) {
                    Some(Ok(text)) => {
                        // The relay saw no answer (it came some other way): the Gateway's.
                        if !self.relay.relayed_text() && !text.trim().is_empty() {
                            let _ = tx.send(DriverEvent::Model(ProviderEvent::Text(text))).await;
                            let _ = tx.send(DriverEvent::ModelEnd).await;
                        }
                        let _ = tx.send(DriverEvent::Done(Ok(()))).await;
                        return Ok(());
                    }
                    Some(Err(why)) => return Err(why),
                    None => {}
                }
            }
            if chunk.is_none() {
                return Err("OpenClaw's Gateway ended the turn without an answer".into());
            }
        }
    }
}

/// How a Gateway stream event ends the turn, if it does: `response.completed` with
/// its output text, `response.failed` and `error` with the reason.
fn ending(v: &Value) -> Option<Result<String, String>> {
    match v["type"].as_str()? {
        "response.completed" => {
            let texts = v["response"]["output"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|item| item["content"].as_array().into_iter().flatten())
                .filter(|c| c["type"] == "output_text")
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>();
            Some(Ok(texts.join("\n")))
        }
        "response.failed" | "response.incomplete" => {
            let r = &v["response"];
            let why = r["error"]["message"]
                .as_str()
                .or(r["incomplete_details"]["reason"].as_str())
                .unwrap_or("OpenClaw's turn failed");
            Some(Err(why.to_string()))
        }
        "error" => {
            let why = v["error"]["message"].as_str().or(v["message"].as_str()).unwrap_or("OpenClaw failed");
            Some(Err(why.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_stream_ends_the_turn_with_its_text_or_its_reason() {
        let done = json!({"type": "response.completed", "response": {"output": [
            {"type": "message", "content": [{"type": "output_text", "text": "all done"}]}]}});
        assert_eq!(ending(&done), Some(Ok("all done".to_string())));
        let failed = json!({"type": "response.failed", "response": {"error": {"message": "HTTP 500 from berth/m"}}});
        assert_eq!(ending(&failed), Some(Err("HTTP 500 from berth/m".to_string())));
        let error = json!({"type": "error", "error": {"message": "no such model"}});
        assert_eq!(ending(&error), Some(Err("no such model".to_string())));
        assert_eq!(ending(&json!({"type": "response.output_text.delta", "delta": "all"})), None);
        assert_eq!(ending(&json!({"no": "type"})), None);
    }
}
