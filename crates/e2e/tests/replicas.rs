//! Several `berth server` replicas on one PostgreSQL database and one Docker daemon:
//! any replica serves the API and the edge for any instance, limits hold across them,
//! a key revoked on one is refused on the other within a second, and when the replica
//! running the reconciler dies another takes over.

use berth_test_util::docker::{docker, exec};
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::ops::AsyncFnMut;
use std::time::{Duration, Instant};

/// Two replicas on a fresh database.
async fn replicas() -> (TestServer, TestServer) {
    let url = berth_test_util::postgres::database_url();
    let opts = ServerOptions { extra_args: vec!["--database-url".into(), url], ..ServerOptions::default() };
    let a = TestServer::start_with(opts).await;
    let b = TestServer::start_replica(&a).await;
    (a, b)
}

async fn health(s: &TestServer) -> Value {
    let r = s.http().get(format!("{}/healthz?verbose=true", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn leader_of(s: &TestServer) -> bool {
    health(s).await["leader"].as_bool().expect("healthz says whether this replica leads")
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if ok().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_instance_made_through_one_replica_is_listed_run_and_reached_through_the_other() {
    let (a, b) = replicas().await;
    let db = health(&a).await;
    assert_eq!(db["database"]["backend"], "postgres", "{db}");
    assert_eq!(leader_of(&a).await as u8 + leader_of(&b).await as u8, 1, "exactly one replica leads");

    let inst = a.create_instance(json!({"name": "shared"})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let (st, list) = b.get("/v1/instances").await;
    assert_eq!(st, 200);
    assert!(list["data"].as_array().unwrap().iter().any(|i| i["id"] == id), "{list}");
    let (st, r) = b
        .post(&format!("/v1/instances/{id}/exec"), json!({"command": "echo via-b > /home/agent/b.txt; hostname"}))
        .await;
    assert_eq!((st, r["exit_code"].as_i64()), (200, Some(0)), "{r}");
    assert_eq!(exec(&id, "cat /home/agent/b.txt").1, "via-b");

    // The edge of the replica that did not make it routes to it.
    let host = format!("{}.localhost:{}", &id[5..], b.edge_port());
    let r =
        b.http().get(format!("{}/health", b.edge_base)).header("host", &host).bearer_auth(&b.key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", b.log());

    // Stopped through B: A's edge knows at once (it answers without waking it).
    let (st, _) = b.call(Method::POST, &format!("/v1/instances/{id}/stop"), Some(&b.key), None).await;
    assert_eq!(st, 200);
    let a_host = format!("{}.localhost:{}", &id[5..], a.edge_port());
    let took = wait_until("A's edge sees the stop made through B", Duration::from_secs(2), async || {
        let r = a
            .http()
            .get(format!("{}/health", a.edge_base))
            .header("host", &a_host)
            .bearer_auth(&a.key)
            .send()
            .await
            .unwrap();
        r.status() == 409
    })
    .await;
    eprintln!("route change through B seen by A's edge after {took:?}");
    let (_, got) = a.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["status"], "stopped");

    // A key that B has verified (and cached) is refused by B within a second of its
    // deletion through A.
    let (st, key) = a.post("/v1/keys", json!({"name": "revoked-on-a"})).await;
    assert_eq!(st, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    assert_eq!(b.call(Method::GET, "/v1/instances", Some(&secret), None).await.0, 200);
    let (st, _) =
        a.call(Method::DELETE, &format!("/v1/keys/{}", key["id"].as_str().unwrap()), Some(&a.key), None).await;
    assert!(st == 200 || st == 204, "{st}");
    let took = wait_until("B refuses the key revoked on A", Duration::from_secs(1), async || {
        b.call(Method::GET, "/v1/instances", Some(&secret), None).await.0 == 401
    })
    .await;
    eprintln!("revocation on A refused by B after {took:?}");
}

#[tokio::test]
async fn forty_creates_split_across_replicas_never_exceed_the_workspace_limit() {
    let (a, b) = replicas().await;
    let (st, ws) = a
        .call(Method::POST, "/v1/workspaces", Some(&a.admin_key), Some(json!({"name": "small", "instance_limit": 3})))
        .await;
    assert_eq!(st, 201, "{ws}");
    let key = ws["key"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, base) =
            if i % 2 == 0 { (a.http().clone(), a.base.clone()) } else { (b.http().clone(), b.base.clone()) };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.post(format!("{base}/v1/instances")).bearer_auth(&key).json(&json!({})).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let made = statuses.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(made, 3, "{statuses:?}");
    for (status, body) in &statuses {
        assert!(*status == 201 || body.contains("limit_exceeded"), "{status} {body}\n{}\n{}", a.log(), b.log());
    }
    let (_, list) = b.call(Method::GET, "/v1/instances", Some(&key), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    let containers = berth_test_util::docker::containers_with_label("berth.workspace", ws["id"].as_str().unwrap());
    assert_eq!(containers.len(), 3, "one container per instance, none left over: {containers:?}");
}

#[tokio::test]
async fn when_the_leading_replica_is_killed_the_other_reconciles_within_seconds() {
    let (mut a, b) = replicas().await;
    wait_until("A leads", Duration::from_secs(10), async || leader_of(&a).await).await;
    assert!(!leader_of(&b).await);
    let id = a.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    assert_eq!(exec(&id, "echo kept > /home/agent/notes.txt").0, 0);

    a.kill();
    let killed = Instant::now();
    docker(&["rm", "-f", &format!("berth-{id}")]);
    let led = wait_until("B leads", Duration::from_secs(10), async || leader_of(&b).await).await;
    wait_until("the removed container comes back through B", Duration::from_secs(10) - led, async || {
        let (_, inst) = b.get(&format!("/v1/instances/{id}")).await;
        inst["restart_count"] == 1 && inst["status"] == "running"
    })
    .await;
    eprintln!("failover: B leads {led:?} after the kill; container back {:?} after it", killed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while exec(&id, "cat /home/agent/notes.txt").1 != "kept" {
        assert!(
            Instant::now() < deadline,
            "the data came back: {:?} {}\n{}",
            exec(&id, "cat /home/agent/notes.txt"),
            b.get(&format!("/v1/instances/{id}")).await.1,
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An installation moves from SQLite to PostgreSQL with `berth export` and `berth
/// import`: the server started on PostgreSQL (same data dir, so same secret key) has
/// the same instances, running, their env, keys and events.
#[tokio::test]
async fn an_installation_moves_from_sqlite_to_postgres_with_export_and_import() {
    let mut s = TestServer::start().await;
    let inst = s.create_instance(json!({"name": "moved", "env": {"SECRET_THING": "s3cret-value"}})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(exec(&id, "echo kept > /home/agent/notes.txt").0, 0);
    let (st, key) = s.post("/v1/keys", json!({"name": "app"})).await;
    assert_eq!(st, 201, "{key}");
    let app_key = key["key"].as_str().unwrap().to_string();
    let (_, before) = s.get(&format!("/v1/instances/{id}/events")).await;
    s.terminate();

    let berth = |args: &[&str]| {
        let out = std::process::Command::new(berth_test_util::server::berth_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let data = s.data_dir().display().to_string();
    let file = s.data_dir().join("export.jsonl").display().to_string();
    let said = berth(&["export", "--data", &data, "--out", &file]);
    assert!(said.contains("1 instances") || said.contains("instances"), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("s3cret-value"), "env values stay sealed in the export");
    let url = berth_test_util::postgres::database_url();
    // Migrating first (as an operator may, before any server starts) changes nothing
    // import cares about; twice is fine.
    for _ in 0..2 {
        let said = berth(&["migrate", "--database-url", &url]);
        assert!(said.contains("up to date"), "{said}");
    }
    let refused = std::process::Command::new(berth_test_util::server::berth_bin())
        .args(["migrate", "--database-url", "mysql://x@localhost/db"])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("sqlite:PATH or postgres://"), "{why}");
    let said = berth(&["import", "--database-url", &url, &file]);
    assert!(said.contains("instances"), "{said}");
    // Importing twice is refused and changes nothing.
    let again = std::process::Command::new(berth_test_util::server::berth_bin())
        .args(["import", "--database-url", &url, &file])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    s.restart_with(vec!["--database-url".into(), url]).await;
    assert_eq!(health(&s).await["database"]["backend"], "postgres");
    let (st, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!((st, got["status"].as_str()), (200, Some("running")), "{got}");
    assert!(got["env"].get("SECRET_THING").is_some(), "{got}");
    assert_eq!(s.call(Method::GET, "/v1/instances", Some(&app_key), None).await.0, 200, "keys moved");
    let (_, after) = s.get(&format!("/v1/instances/{id}/events")).await;
    let n = |v: &Value| v["data"].as_array().map_or(0, Vec::len);
    assert!(n(&after) >= n(&before) && n(&before) > 0, "events moved: {before} → {after}");
    assert_eq!(exec(&id, "cat /home/agent/notes.txt").1, "kept");
    let (st, r) = s.post(&format!("/v1/instances/{id}/exec"), json!({"command": "echo $SECRET_THING"})).await;
    assert_eq!((st, r["stdout"].as_str()), (200, Some("s3cret-value\n")), "{r}");
}
