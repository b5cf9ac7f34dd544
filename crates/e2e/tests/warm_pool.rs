//! The warm pool on real containers: creates that match take a started instance
//! (never one twice, each with its own environment, token and egress policy), the pool
//! refills, stays out of every list, survives a server restart, and is replaced when
//! its template gets a new version.

use berth_test_util::docker::{docker, exec, network_gateway, reach_host_port, TEST_NETWORK};
use berth_test_util::llm::{text, ScriptedLlm};
use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const POOL_WORKSPACE: &str = "ws_warmpool0000";

/// Ready instances of the pool named `TEMPLATE:SIZE`, as `/metrics` reports them.
async fn ready(s: &TestServer, pool: &str) -> i64 {
    let metrics = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    let line = format!("berth_warm_pool_ready{{kind=\"{pool}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.trim().parse().unwrap())
}

/// Waits until the pool holds `n` ready instances.
async fn wait_ready(s: &TestServer, pool: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = ready(s, pool).await;
        if got == n {
            return;
        }
        assert!(Instant::now() < deadline, "pool {pool} holds {got} ready instances, not {n}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pool's unclaimed containers (made for its workspace, not listed in ours).
async fn pool_containers(s: &TestServer) -> BTreeSet<String> {
    let (_, list) = s.get("/v1/instances?limit=100").await;
    let ours: BTreeSet<String> =
        list["data"].as_array().unwrap().iter().map(|i| format!("berth-{}", i["id"].as_str().unwrap())).collect();
    made_for_pool(s).difference(&ours).cloned().collect()
}

/// Containers made for the pool's workspace (claimed ones keep that label).
fn made_for_pool(s: &TestServer) -> BTreeSet<String> {
    let (ok, out, err) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=berth.install={}", s.install_id),
        "--filter",
        &format!("label=berth.workspace={POOL_WORKSPACE}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(ok, "{err}");
    out.lines().map(str::to_string).collect()
}

/// Whether the instance came from the warm pool (its audit trail says so).
async fn was_warm(s: &TestServer, id: &str) -> bool {
    let (status, events) = s.get(&format!("/v1/instances/{id}/events")).await;
    assert_eq!(status, 200, "{events}");
    events["data"].as_array().unwrap().iter().any(|e| e["reason"] == "created from the warm pool")
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (status, inst) = s.post("/v1/instances", body).await;
    assert_eq!(status, 201, "{inst}");
    inst
}

#[tokio::test]
async fn concurrent_creates_share_the_pool_without_giving_an_instance_twice_and_it_refills_and_survives_a_restart() {
    let mut s = TestServer::start_with(berth_test_util::ServerOptions {
        // 25 instances of 2 GiB: more than this host's memory × 2.
        extra_args: vec!["--warm-pool".into(), "berth-agent=5..5".into(), "--memory-overcommit".into(), "8".into()],
        ..Default::default()
    })
    .await;
    wait_ready(&s, "berth-agent:1", 5).await;
    // Pool instances belong to no workspace anyone sees.
    let (_, list) = s.get("/v1/instances").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    let (_, workspaces) = s.get("/v1/workspaces").await;
    assert!(!workspaces.to_string().contains(POOL_WORKSPACE), "{workspaces}");
    let pooled = pool_containers(&s).await;
    assert_eq!(pooled.len(), 5, "{pooled:?}");

    // 20 at once from a pool of 5: all made, none twice, each with its own env.
    let creates = (0..20).map(|i| {
        let s = &s;
        async move {
            let inst = create(s, json!({"env": {"WHO": format!("client-{i}")}, "name": format!("c{i}")})).await;
            (i, inst["id"].as_str().unwrap().to_string())
        }
    });
    let made = futures_util::future::join_all(creates).await;
    let ids: BTreeSet<&String> = made.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 20, "an instance was given twice: {made:?}");
    let mut warm = 0;
    for (i, id) in &made {
        if was_warm(&s, id).await {
            warm += 1;
            assert!(pooled.contains(&format!("berth-{id}")), "{id} was warm but not one of the pool's");
        }
        let out = s.exec(id, json!(["sh", "-c", "echo $WHO"]), None).await;
        assert_eq!(out["stdout"].as_str().unwrap().trim(), format!("client-{i}"), "{id}: {out}");
    }
    assert!(warm >= 5, "only {warm} of 20 creates were served by a pool of 5");
    let (_, list) = s.get("/v1/instances?limit=100").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 20);
    // What was taken is made again.
    wait_ready(&s, "berth-agent:1", 5).await;

    // A restart keeps the pool's instances (adopted, not made again).
    let before = pool_containers(&s).await;
    s.restart().await;
    wait_ready(&s, "berth-agent:1", 5).await;
    assert_eq!(pool_containers(&s).await, before, "the restarted server replaced its pool instead of adopting it");
    let inst = create(&s, json!({"env": {"WHO": "after-restart"}})).await;
    let id = inst["id"].as_str().unwrap();
    assert!(was_warm(&s, id).await);
    assert!(before.contains(&format!("berth-{id}")));
}

#[tokio::test]
async fn a_claimed_instance_runs_with_the_workspaces_env_token_and_egress_not_the_pools() {
    let s = TestServer::start_with(berth_test_util::ServerOptions {
        extra_args: ["--warm-pool", "berth-agent=1", "--max-instances", "2"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let model = ScriptedLlm::openai_on("0.0.0.0:0", |_| text(&["warm ", "hello"])).await;
    let llm = model.base_url_at(&network_gateway(TEST_NETWORK));
    wait_ready(&s, "berth-agent:1", 1).await;
    let inst = create(
        &s,
        json!({
            "env": {"BERTH_LLM_BASE_URL": llm, "BERTH_LLM_API_KEY": "sk-tenant-key", "BERTH_MODEL": "scripted"},
            "network": reach_host_port(model.port()),
        }),
    )
    .await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert!(was_warm(&s, &id).await);

    // The agent took the tenant's LLM settings (the pool's had none), and the egress
    // policy that lets it reach the model is the instance's own.
    let host = berth_test_util::app::host_of(inst["url"].as_str().unwrap());
    let turn = |s: &TestServer| {
        s.edge(Method::POST, &host, "/v1/responses").bearer_auth(&s.key).json(&json!({"input": "hi"})).send()
    };
    let answer: Value = turn(&s).await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"], "completed", "{answer}");
    assert!(answer["output"].to_string().contains("warm hello"), "{answer}");
    let seen = model.requests();
    assert_eq!(seen[0].headers["authorization"].to_str().unwrap(), "Bearer sk-tenant-key");

    // The gateway checks the instance's token: the edge gets in, a direct caller with
    // another token does not.
    let addr = berth_test_util::docker::inspect(
        &format!("berth-{id}"),
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    let direct = s
        .http()
        .get(format!("http://{}:3737/v1/sessions", addr.trim()))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    // Nobody can claim it again, with or without a token.
    let again = s
        .http()
        .post(format!("http://{}:3737/berth/claim", addr.trim()))
        .json(&json!({"env": {"BERTH_LLM_BASE_URL": "http://elsewhere"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);

    // A restart of its container: the agent is given the record's environment again.
    let (status, _) = s.post(&format!("/v1/instances/{id}/restart"), json!({})).await;
    assert_eq!(status, 200);
    let answer: Value = turn(&s).await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"], "completed", "after a restart: {answer}");
    let (code, out) = exec(&id, "echo $BERTH_MODEL");
    assert_eq!((code, out.trim()), (0, ""), "the container itself never had the tenant's env");
    let out = s.exec(&id, json!(["sh", "-c", "echo $BERTH_MODEL"]), None).await;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "scripted", "execs get the instance's env: {out}");

    // The server is full (--max-instances 2: this one and the refilled pool's): a create
    // the pool cannot serve gets the room of a ready pool instance.
    wait_ready(&s, "berth-agent:1", 1).await;
    let other = create(&s, json!({"size": 2})).await;
    assert!(!was_warm(&s, other["id"].as_str().unwrap()).await);
    assert_eq!(ready(&s, "berth-agent:1").await, 0);
}

#[tokio::test]
async fn a_new_template_version_replaces_the_pool() {
    let mut s = TestServer::start().await;
    let image = std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into());
    let (status, t) =
        s.post("/v1/templates", json!({"name": "pooled", "image": image, "env": {"FLAVOUR": "one"}})).await;
    assert_eq!(status, 201, "{t}");
    let tpl = t["id"].as_str().unwrap().to_string();
    s.restart_with(vec!["--warm-pool".into(), format!("{tpl}=2")]).await;
    let pool = format!("{tpl}:1");
    wait_ready(&s, &pool, 2).await;
    let first = pool_containers(&s).await;

    let inst = create(&s, json!({"template": tpl})).await;
    let id = inst["id"].as_str().unwrap();
    assert!(was_warm(&s, id).await);
    assert_eq!(s.exec(id, json!(["sh", "-c", "echo $FLAVOUR"]), None).await["stdout"], "one\n");

    let (status, v2) = s
        .call(Method::PATCH, &format!("/v1/templates/{tpl}"), Some(&s.key), Some(json!({"env": {"FLAVOUR": "two"}})))
        .await;
    assert_eq!(status, 200, "{v2}");
    // Every instance made from version 1 goes; two of version 2 take their place.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = pool_containers(&s).await;
        if ready(&s, &pool).await == 2 && now.is_disjoint(&first) && now.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "pool not replaced: {first:?} → {now:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inst = create(&s, json!({"template": tpl})).await;
    let id = inst["id"].as_str().unwrap();
    assert!(was_warm(&s, id).await);
    assert_eq!(inst["template"]["version"], 2, "{inst}");
    assert_eq!(s.exec(id, json!(["sh", "-c", "echo $FLAVOUR"]), None).await["stdout"], "two\n");
}
