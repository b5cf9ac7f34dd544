//! The managed LLM proxy and the money behind it, against a real `berth server` with
//! `--billing` and an upstream written here that speaks OpenAI chat completions, the
//! Responses API and Anthropic Messages (streamed and not) and reports the usage the
//! request's `user` field asks for (`"IN,OUT"`; default 11 in, 7 out).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_test_util::{ServerOptions, TestServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const UPSTREAM_KEY: &str = "sk-upstream-operator-secret-4242";
/// $100 per million tokens in and out: 1 token = 100 micros.
const PRICE: &str = "model-a=100,100";

/// What the webhook receiver got.
type Hooks = Arc<Mutex<Vec<(HeaderMap, String)>>>;

#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
}

fn usage_asked(body: &Value) -> (u64, u64) {
    let tag = body["user"].as_str().or(body["metadata"]["user_id"].as_str()).unwrap_or("11,7");
    let (i, o) = tag.split_once(',').unwrap_or(("11", "7"));
    (i.parse().unwrap_or(11), o.parse().unwrap_or(7))
}

fn sse(events: Vec<String>) -> Response {
    ([("content-type", "text/event-stream")], events.concat()).into_response()
}

async fn answer(State(u): State<Upstream>, api: &str, headers: HeaderMap, body: Value) -> Response {
    u.seen.lock().unwrap().push((api.to_string(), headers, body.clone()));
    // Slow enough that concurrent calls are all in flight together; `slow`: still
    // answering when the test kills the server.
    let pause = if body["user"] == "slow" { 10_000 } else { 150 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let (i, o) = usage_asked(&body);
    let stream = body["stream"] == json!(true);
    let model = body["model"].clone();
    match (api, stream) {
        ("chat", false) => Json(json!({"id": "c1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}}))
        .into_response(),
        ("chat", true) => {
            let chunk = |delta: Value, fin: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})
                )
            };
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let last = messages.last().cloned().unwrap_or_default();
            let offers_search = body["tools"].to_string().contains("web_search");
            let mut ev = if offers_search && last["role"] == "user" && last["content"].to_string().contains("search") {
                // The model asks for a web search...
                let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "web_search", "arguments": "{\"query\":\"berth\"}"}}]});
                vec![chunk(call, Value::Null), chunk(json!({}), json!("tool_calls"))]
            } else if last["role"] == "tool" {
                // ...and answers from what it found.
                let found = last["content"].as_str().unwrap_or_default().chars().take(60).collect::<String>();
                vec![
                    chunk(json!({"role": "assistant", "content": format!("found: {found}")}), Value::Null),
                    chunk(json!({}), json!("stop")),
                ]
            } else {
                vec![
                    chunk(json!({"role": "assistant", "content": "po"}), Value::Null),
                    chunk(json!({"content": "ng"}), Value::Null),
                    chunk(json!({}), json!("stop")),
                ]
            };
            if body["stream_options"]["include_usage"] == json!(true) {
                ev.push(format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}})
                ));
            }
            ev.push("data: [DONE]\n\n".into());
            sse(ev)
        }
        ("responses", false) => {
            Json(json!({"id": "resp_1", "object": "response", "status": "completed", "model": model,
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "pong"}]}],
            "usage": {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}}))
            .into_response()
        }
        ("responses", true) => sse(vec![
            format!(
                "event: response.created\ndata: {}\n\n",
                json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
            ),
            format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"type": "response.output_text.delta", "delta": "pong"})
            ),
            format!(
                "event: response.completed\ndata: {}\n\n",
                json!({"type": "response.completed",
                "response": {"id": "resp_1", "status": "completed", "usage": {"input_tokens": i, "output_tokens": o}}})
            ),
        ]),
        ("messages", false) => Json(json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": i, "output_tokens": o}}))
        .into_response(),
        _ => sse(vec![
            format!(
                "event: message_start\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"id": "msg_1",
                "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": i, "output_tokens": 1}}})
            ),
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "pong"}})
            ),
            format!(
                "event: message_delta\ndata: {}\n\n",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": o}})
            ),
            format!("event: message_stop\ndata: {}\n\n", json!({"type": "message_stop"})),
        ]),
    }
}

async fn upstream() -> (Upstream, String, tokio::task::JoinHandle<()>) {
    let u = Upstream::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(|s, h, Json(b)| answer(s, "chat", h, b)))
        .route("/v1/responses", post(|s, h, Json(b)| answer(s, "responses", h, b)))
        .route("/v1/messages", post(|s, h, Json(b)| answer(s, "messages", h, b)))
        // A paid search API: results as JSON, the query and key recorded.
        .route(
            "/search",
            axum::routing::get(
                |State(u): State<Upstream>, headers: HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                    let q = q.unwrap_or_default();
                    u.seen.lock().unwrap().push(("search".into(), headers, json!(q)));
                    Json(json!({"results": [{"title": "result-berth", "url": "http://example.invalid/", "query": q}]}))
                },
            ),
        )
        .with_state(u.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (u, url, task)
}

/// A turn with an instance's agent through the edge: status and body.
async fn chat_via_edge(s: &TestServer, inst: &Value, input: &str) -> (u16, String) {
    let r = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", berth_test_util::app::host_of(inst["url"].as_str().unwrap()))
        .bearer_auth(&s.key)
        .json(&json!({"input": input}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The id of workspace `default` (the admin's).
async fn default_workspace(s: &TestServer) -> String {
    let (_, workspaces) = s.get("/v1/workspaces").await;
    workspaces["data"][0]["id"].as_str().expect("the default workspace").to_string()
}

/// The whole ledger, newest first, read in pages of 7.
async fn ledger(s: &TestServer) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/billing/ledger?limit=7&cursor={c}"),
            None => "/v1/billing/ledger?limit=7".into(),
        };
        let (_, page) = s.get(&path).await;
        entries.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return entries,
        }
    }
}

/// The sum of ledger entries' amounts.
fn amounts(entries: &[Value]) -> i64 {
    entries.iter().map(|e| e["amount_micros"].as_i64().unwrap()).sum()
}

/// The instance's env as its processes see it.
async fn instance_env(s: &TestServer, id: &str) -> String {
    let (st, r) = s.post(&format!("/v1/instances/{id}/exec"), json!({"command": ["env"]})).await;
    assert_eq!(st, 200, "{r}");
    r["stdout"].as_str().unwrap().to_string()
}

fn env_var(env: &str, name: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} not in env"))
        .to_string()
}

struct Proxy {
    base: String,
    http: reqwest::Client,
}

impl Proxy {
    async fn call(&self, token: &str, path: &str, body: Value) -> (u16, String) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

async fn instance(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/v1/instances/{id}")).await.1
}

/// The instance once its managed usage reads `micros` (a stream settles just after its
/// last event); fails after 5 s.
async fn used_settles(s: &TestServer, id: &str, micros: i64) -> Value {
    for _ in 0..50 {
        let inst = instance(s, id).await;
        if inst["budget"]["managed_used_micros"] == micros {
            return inst;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inst = instance(s, id).await;
    panic!("managed usage did not settle at {micros}: {inst}")
}

async fn balance(s: &TestServer) -> i64 {
    let (_, b) = s.get("/v1/billing").await;
    b["balance_micros"].as_i64().unwrap()
}

#[tokio::test]
async fn the_managed_proxy_meters_caps_and_bills_every_call() {
    let (up, up_url, _task) = upstream().await;
    let s = TestServer::start_with(ServerOptions {
        network: "berth-e2e-money".into(),
        extra_args: [
            "--billing",
            "--llm-base-url",
            &up_url,
            "--llm-api-key",
            UPSTREAM_KEY,
            "--llm-price",
            PRICE,
            "--llm-proxy-port",
            "0",
            "--tool-upstream",
            &format!("web_search={},tool-secret-key,0.01", up_url.trim_end_matches("/v1").to_string() + "/search"),
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;

    // Credentials come with the instance: the proxy's URL and a token of its own, never
    // the operator's key.
    let a = s.create_instance(json!({"budget": {"managed_cap_usd": 0.5}})).await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let env = instance_env(&s, &a_id).await;
    assert!(!env.contains(UPSTREAM_KEY), "the upstream key reached the instance");
    assert!(!instance(&s, &a_id).await.to_string().contains(UPSTREAM_KEY));
    let base = env_var(&env, "BERTH_LLM_BASE_URL");
    let token = env_var(&env, "BERTH_LLM_API_KEY");
    assert_eq!(env_var(&env, "BERTH_MODEL"), "model-a");
    assert!(token.starts_with("sk-berth-") && token.contains(&a_id), "{token}");
    let proxy = Proxy { base: base.clone(), http: reqwest::Client::builder().no_proxy().build().unwrap() };
    // The key is nowhere in the instance: not in its container's config, not in any
    // process's environment, not in its files.
    let (ok, inspect, _) = berth_test_util::docker::docker(&["inspect", &format!("berth-{a_id}")]);
    assert!(ok, "{inspect}");
    assert!(inspect.contains("BERTH_LLM_API_KEY") && !inspect.contains(UPSTREAM_KEY));
    let (st, found) = s
        .post(
            &format!("/v1/instances/{a_id}/exec"),
            json!({"command": format!("cat /proc/*/environ | grep -c {UPSTREAM_KEY}; grep -rls {UPSTREAM_KEY} /home /etc /tmp /root; true")}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(found["stdout"].as_str().unwrap().trim(), "0", "{found}");
    // Only on the host's address on the instances' network: not on loopback, not on
    // the host's other addresses.
    let url = reqwest::Url::parse(&base).unwrap();
    let (gateway, port) = (url.host_str().unwrap().to_string(), url.port().unwrap());
    // The host's own IPv4 addresses: the `/32 host LOCAL` entries of the kernel's table.
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap();
    let lines: Vec<&str> = trie.lines().collect();
    let mut others: Vec<String> = lines
        .windows(2)
        .filter(|w| w[1].contains("/32 host LOCAL"))
        .filter_map(|w| w[0].split_whitespace().last().map(str::to_string))
        .filter(|a| *a != gateway)
        .collect();
    others.sort();
    others.dedup();
    assert!(others.iter().any(|a| a == "127.0.0.1"), "{trie}");
    for addr in &others {
        let refused = std::net::TcpStream::connect_timeout(
            &format!("{addr}:{port}").parse().unwrap(),
            Duration::from_millis(500),
        )
        .is_err();
        assert!(refused, "the proxy answers on {addr}:{port}");
    }

    let chat = |usage: &str, stream: bool| {
        json!({"model": "model-a", "user": usage, "max_tokens": 1000, "stream": stream,
            "messages": [{"role": "user", "content": "ping"}]})
    };
    // An empty wallet refuses with --billing, and nothing is charged.
    let (st, body) = proxy.call(&token, "/chat/completions", chat("1000,1000", false)).await;
    assert_eq!(st, 402, "{body}");
    assert!(body.contains("insufficient_funds"), "{body}");
    assert_eq!(up.seen.lock().unwrap().len(), 0, "a refused call reached the upstream");

    // Only an admin tops the wallet up.
    let ws = default_workspace(&s).await;
    let (st, _) = s.post(&format!("/v1/workspaces/{ws}/topup"), json!({"micros": -5})).await;
    assert_eq!(st, 400);
    let (st, r) = s.post(&format!("/v1/workspaces/{ws}/topup"), json!({"micros": 10_000_000})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(balance(&s).await, 10_000_000);

    // $0.50 cap, calls of 1,000 + 1,000 tokens at $100/M = $0.20: two are served, the third refused.
    let (st, body) = proxy.call(&token, "/chat/completions", chat("1000,1000", false)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"]["content"], "pong");
    let (st, body) = proxy.call(&token, "/chat/completions", chat("1000,1000", true)).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"po\"") && body.contains("[DONE]"), "{body}");
    assert!(!body.contains("\"usage\""), "a client that did not ask for usage got the usage chunk: {body}");
    let inst = used_settles(&s, &a_id, 400_000).await;
    assert_eq!(inst["budget"]["remaining_usd"], 0.1, "{inst}");
    let (st, body) = proxy.call(&token, "/chat/completions", chat("1000,1000", false)).await;
    assert_eq!(st, 402, "{body}");
    assert!(body.contains("budget_exceeded"), "{body}");
    // The upstream got the operator's key and asked for the usage of the stream.
    {
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (_, h, b) in seen.iter() {
            assert_eq!(h["authorization"], format!("Bearer {UPSTREAM_KEY}").as_str());
            assert_eq!(b["model"], "model-a");
        }
        assert_eq!(seen[1].2["stream_options"]["include_usage"], true);
    }
    // A top-up makes room again.
    let (st, r) = s.post(&format!("/v1/instances/{a_id}/budget/topup"), json!({"topup_micros": 200_000})).await;
    assert_eq!(st, 200, "{r}");
    let (st, body) = proxy.call(&token, "/chat/completions", chat("1000,1000", false)).await;
    assert_eq!(st, 200, "{body}");

    // Through the agent, an exhausted budget fails the turn with a reason a person can act on.
    let (_, text) = chat_via_edge(&s, &a, "ping").await;
    assert!(text.contains("budget_exceeded") && text.contains("budget"), "{text}");

    // Responses and Anthropic Messages, streamed, exact to the micro: 123 + 45 tokens.
    let b = s.create_instance(json!({})).await;
    let b_id = b["id"].as_str().unwrap().to_string();
    let b_token = env_var(&instance_env(&s, &b_id).await, "BERTH_LLM_API_KEY");
    let (st, body) = proxy
        .call(&b_token, "/responses", json!({"model": "model-a", "user": "123,45", "input": "ping", "stream": true}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("response.completed"), "{body}");
    let r = proxy
        .http
        .post(format!("{base}/messages"))
        .header("x-api-key", &b_token)
        .json(&json!({"model": "model-a", "max_tokens": 100, "metadata": {"user_id": "123,45"}, "stream": true,
            "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("message_stop"));
    let (_, h, _) = up.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(h["x-api-key"], UPSTREAM_KEY);
    assert_eq!(h["anthropic-version"], "2023-06-01");
    used_settles(&s, &b_id, 2 * (123 + 45) * 100).await;

    // End to end: an instance created with no env chats through the edge; its agent
    // reaches the proxy through the firewall with its own token and default model.
    let (status, text) = chat_via_edge(&s, &b, "ping").await;
    assert_eq!(status, 200, "{text}");
    let answer: berth_responses::Response = serde_json::from_str(&text).unwrap();
    assert_eq!(answer.output_text(), "pong", "{text}");
    assert_eq!(answer.usage.as_ref().map(|u| (u.input_tokens, u.output_tokens)), Some((11, 7)), "{text}");
    let (_, h, body) = up.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(h["authorization"], format!("Bearer {UPSTREAM_KEY}").as_str());
    assert_eq!(body["model"], "model-a");
    used_settles(&s, &b_id, 2 * (123 + 45) * 100 + (11 + 7) * 100).await;

    // Metered tools: a search through the proxy with the operator's key, $0.01 a call...
    let b_env = instance_env(&s, &b_id).await;
    let search_url = env_var(&b_env, "BERTH_WEB_SEARCH_URL");
    let tools_token = env_var(&b_env, "BERTH_TOOLS_TOKEN");
    assert_eq!(tools_token, b_token);
    let r = proxy.http.get(format!("{search_url}?q=rust&count=3")).bearer_auth(&b_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("result-berth"));
    let (_, h, q) = up.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(h["authorization"], "Bearer tool-secret-key");
    assert_eq!(q, "q=rust&count=3");
    let before_agent = 2 * (123 + 45) * 100 + (11 + 7) * 100 + 10_000;
    used_settles(&s, &b_id, before_agent).await;
    // ...and berth-agent offers the model `web_search`, which goes the same way.
    let (_, text) = chat_via_edge(&s, &b, "search please").await;
    assert!(text.contains("found: ") && text.contains("result-berth"), "{text}");
    // Two model calls (11 + 7 tokens each) and one search.
    used_settles(&s, &b_id, before_agent + 2 * 1_800 + 10_000).await;
    let (st, _) = proxy.call(&b_token, "/../tools/nope", json!({})).await;
    assert_eq!(st, 404);

    // Refusals that name what was wrong.
    let (st, body) = proxy.call(&b_token, "/chat/completions", json!({"model": "unpriced", "messages": []})).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("model_not_priced") && body.contains("unpriced"), "{body}");
    let (st, _) = proxy.call("sk-berth-inst_aaaaaaaaaa-00", "/chat/completions", chat("1,1", false)).await;
    assert_eq!(st, 401);
    let patch = json!({"budget": {"models": ["model-b"]}});
    let (st, r) = s.call(reqwest::Method::PATCH, &format!("/v1/instances/{b_id}"), Some(&s.key), Some(patch)).await;
    assert_eq!(st, 200, "{r}");
    let (st, body) = proxy.call(&b_token, "/chat/completions", chat("1,1", false)).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("model_not_allowed"), "{body}");

    // 50 concurrent calls at the edge of a $1 cap, each $0.1001: never more than the cap.
    let c = s.create_instance(json!({"budget": {"managed_cap_usd": 1.0}})).await;
    let c_id = c["id"].as_str().unwrap().to_string();
    let c_token = env_var(&instance_env(&s, &c_id).await, "BERTH_LLM_API_KEY");
    let calls = (0..50).map(|_| proxy.call(&c_token, "/chat/completions", chat("10,1000", false)));
    let results = futures_util::future::join_all(calls).await;
    let served = results.iter().filter(|(st, _)| *st == 200).count() as i64;
    assert!(results.iter().all(|(st, _)| *st == 200 || *st == 402), "{results:?}");
    let used = instance(&s, &c_id).await["budget"]["managed_used_micros"].as_i64().unwrap();
    assert_eq!(used, served * 101_000);
    assert!(used <= 1_000_000, "overspent: {used} micros on a cap of 1,000,000 ({served} calls served)");
    assert!(served >= 8, "only {served} calls served under a cap that pays for 9");
    eprintln!("concurrency: {served} of 50 calls served, {used} micros used of a 1,000,000 cap");

    // The ledger adds up: every entry moved the balance by its amount.
    let entries = ledger(&s).await;
    let sum = amounts(&entries);
    let bal = balance(&s).await;
    assert_eq!(sum, bal);
    assert_eq!(entries[0]["balance_micros"].as_i64().unwrap(), bal);
    let mut spent = 0;
    for id in [&a_id, &b_id, &c_id] {
        spent += instance(&s, id).await["budget"]["managed_used_micros"].as_i64().unwrap();
    }
    assert_eq!(bal, 10_000_000 - spent);
    let (_, billing) = s.get("/v1/billing").await;
    assert_eq!(billing["managed_usage_micros"].as_i64().unwrap(), 10_000_000 - bal, "{billing}");
    assert_eq!(billing["low_balance"], bal < 1_000_000, "{billing}");
    assert!(!billing.to_string().contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn a_server_killed_mid_call_leaves_the_money_consistent() {
    let (up, up_url, _task) = upstream().await;
    let mut s = TestServer::start_with(ServerOptions {
        network: "berth-e2e-money-kill".into(),
        extra_args: [
            "--billing",
            "--llm-base-url",
            &up_url,
            "--llm-price",
            PRICE,
            // A fixed port: instances keep the URL they were given across the restart.
            "--llm-proxy-port",
            "47072",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let ws = default_workspace(&s).await;
    let (st, _) = s.post(&format!("/v1/workspaces/{ws}/topup"), json!({"micros": 1_000_000})).await;
    assert_eq!(st, 200);
    let inst = s.create_instance(json!({"budget": {"managed_cap_usd": 0.5}})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let env = instance_env(&s, &id).await;
    let proxy = Proxy { base: env_var(&env, "BERTH_LLM_BASE_URL"), http: reqwest::Client::new() };
    let token = env_var(&env, "BERTH_LLM_API_KEY");
    let big = |user: &str| json!({"model": "model-a", "user": user, "max_tokens": 4900, "messages": [{"role": "user", "content": "ping"}]});

    // A call that reserves nearly the whole cap is in flight when the server dies.
    let in_flight = {
        let (base, token) = (proxy.base.clone(), token.clone());
        tokio::spawn(async move {
            let p = Proxy { base, http: reqwest::Client::new() };
            p.call(&token, "/chat/completions", big("slow")).await
        })
    };
    for _ in 0..100 {
        if !up.seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.seen.lock().unwrap().len(), 1, "the call did not reach the upstream");
    s.restart().await;
    let _ = in_flight.await; // its connection was cut

    // Nothing was charged for it, the books add up, and its reservation is gone: a
    // call of the same size is admitted at once.
    let sum = amounts(&ledger(&s).await);
    assert_eq!(sum, balance(&s).await);
    assert_eq!(balance(&s).await, 1_000_000);
    assert_eq!(instance(&s, &id).await["budget"]["managed_used_micros"], 0);
    let (st, body) = proxy.call(&token, "/chat/completions", big("10,10")).await;
    assert_eq!(st, 200, "{body}");
    used_settles(&s, &id, 2_000).await;
    let sum = amounts(&ledger(&s).await);
    assert_eq!(sum, balance(&s).await);
    assert_eq!(sum, 1_000_000 - 2_000);
}

#[tokio::test]
async fn compute_is_paid_monthly_in_advance_from_the_wallet() {
    let clock = tempfile::NamedTempFile::new().unwrap();
    let set_clock = |t: i64| std::fs::write(clock.path(), t.to_string()).unwrap();
    const JAN_31: i64 = 1_801_353_600; // 2027-01-31T00:00:00Z: one day of a 31-day month left
    const FEB_1: i64 = JAN_31 + 86_400;
    const MAR_1: i64 = FEB_1 + 28 * 86_400;
    set_clock(JAN_31);
    // The operator's webhook receiver: refuses the first delivery, takes the retry.
    let hooks: Hooks = Arc::default();
    let hook_app = Router::new()
        .route(
            "/hook",
            post(|State(h): State<Hooks>, headers: HeaderMap, body: String| async move {
                let mut h = h.lock().unwrap();
                h.push((headers, body));
                if h.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }),
        )
        .with_state(hooks.clone());
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook_listener.local_addr().unwrap());
    let _hook_task = tokio::spawn(async move { axum::serve(hook_listener, hook_app).await.unwrap() });
    let s = TestServer::start_with(ServerOptions {
        network: "berth-e2e-money-compute".into(),
        extra_args: [
            "--webhook-url",
            &hook_url,
            "--webhook-secret",
            "whsec_test",
            "--low-balance-micros",
            "50000000",
            "--billing",
            "--size-price",
            "1=31",
            "--size-price",
            "2=62",
            "--test-clock-file",
            clock.path().to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let ws = default_workspace(&s).await;
    // An empty wallet: 402, and nothing is left behind.
    let (st, body) = s.post("/v1/instances", json!({"size": 1})).await;
    assert_eq!(st, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_funds", "{body}");
    assert_eq!(body["error"]["details"]["needed_micros"], 1_000_000, "{body}");
    let (_, list) = s.get("/v1/instances").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    assert!(berth_test_util::docker::containers_with_label("berth.install", &s.install_id).is_empty());

    // $31 a month with one day left: $1 now; growing to size 2 costs the difference.
    let (st, _) = s.post(&format!("/v1/workspaces/{ws}/topup"), json!({"micros": 10_000_000})).await;
    assert_eq!(st, 200);
    let inst = s.create_instance(json!({"size": 1})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(balance(&s).await, 9_000_000);
    let (st, body) =
        s.call(reqwest::Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(json!({"size": 2}))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(balance(&s).await, 8_000_000);

    // February: $62 is due and the wallet holds $8: the instance is stopped, saying why.
    set_clock(FEB_1);
    let mut stopped = Value::Null;
    for _ in 0..100 {
        stopped = instance(&s, &id).await;
        if stopped["status"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let (_, events) = s.get(&format!("/v1/instances/{id}/events")).await;
    assert!(events.to_string().contains("renewal could not be paid"), "{events}");
    assert_eq!(balance(&s).await, 8_000_000);

    // Starting it pays the month first: refused while short, then paid once.
    let (st, body) = s.post(&format!("/v1/instances/{id}/start"), json!({})).await;
    assert_eq!(st, 402, "{body}");
    let (st, _) = s.post(&format!("/v1/workspaces/{ws}/topup"), json!({"micros": 100_000_000})).await;
    assert_eq!(st, 200);
    let (st, body) = s.post(&format!("/v1/instances/{id}/start"), json!({})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(balance(&s).await, 108_000_000 - 62_000_000);
    // Below $50: the operator hears of it, signed, delivered on the retry.
    for _ in 0..50 {
        if hooks.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let hooks = hooks.lock().unwrap();
        assert_eq!(hooks.len(), 2, "one refused delivery and its retry");
        let (headers, body) = &hooks[1];
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "balance.low");
        assert_eq!(event["balance_micros"], 46_000_000);
        assert_eq!(event["workspace_id"], ws.as_str());
        let sig = headers["x-berth-signature"].to_str().unwrap();
        let (t, v1) = sig.strip_prefix("t=").unwrap().split_once(",v1=").unwrap();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "the signature does not verify");
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // a renewal pass: nothing more is due
    assert_eq!(balance(&s).await, 46_000_000);

    // Deleted: no charge in March.
    let (st, _) = s.call(reqwest::Method::DELETE, &format!("/v1/instances/{id}"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    set_clock(MAR_1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(balance(&s).await, 46_000_000);
    let entries = ledger(&s).await;
    assert_eq!(amounts(&entries), 46_000_000, "{entries:?}");
    let compute: Vec<i64> =
        entries.iter().filter(|e| e["kind"] == "compute").map(|e| e["amount_micros"].as_i64().unwrap()).collect();
    assert_eq!(compute, [-62_000_000, -1_000_000, -1_000_000], "{entries:?}");

    // The CLI tops a wallet up in dollars and shows it.
    let berth = |args: &[&str]| {
        let out = std::process::Command::new(berth_test_util::server::berth_bin())
            .args(args)
            .env("BERTH_URL", &s.base)
            .env("BERTH_API_KEY", &s.admin_key)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = berth(&["billing", "topup", "0.25"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("$0.250000") && out.contains("$46.250000"), "{out}");
    let (code, out) = berth(&["billing", "show"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("$46.250000") && out.contains("yes (--billing)"), "{out}");
    let (code, out) = berth(&["billing", "topup", "-1"]);
    assert_ne!(code, Some(0), "{out}");
    let (code, out) = berth(&["billing", "ledger", "--limit", "2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("topup") && out.contains("more: berth billing ledger --cursor"), "{out}");
}
