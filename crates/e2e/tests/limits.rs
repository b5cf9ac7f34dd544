//! Nobody can take the platform down by holding connections: idle and half-sent
//! connections are closed by the header timeout while other clients are served.

use berth_test_util::{ServerOptions, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn two_thousand_idle_connections_are_closed_and_the_api_answers_meanwhile() {
    rlimit::increase_nofile_limit(u64::MAX).expect("the test needs more than 1024 descriptors");
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec!["--header-read-timeout-secs".into(), "2".into()],
        ..Default::default()
    })
    .await;
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Meanwhile the API answers.
    let started = Instant::now();
    let (status, _) = s.get("/v1/instances").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());

    // And every idle connection is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    for (i, mut c) in idle.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, c.read(&mut buf)).await;
        let n = n.unwrap_or_else(|_| panic!("connection {i} still open after {:?}", started.elapsed()));
        assert!(matches!(n, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"), "connection {i}: {n:?}");
    }
    // On a new connection: the one the client pooled before sat idle past the header
    // timeout too, and the server may be closing it as the client reuses it.
    let fresh = reqwest::Client::new().get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
}

#[tokio::test]
async fn one_workspace_cannot_take_every_exec_slot_and_keys_have_a_rate() {
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--workspace-max-execs".into(),
            "1".into(),
            "--key-rate".into(),
            "2".into(),
            "--key-burst".into(),
            "20".into(),
        ],
        ..Default::default()
    })
    .await;
    let a = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let (_, other) = s.post("/v1/workspaces", json!({"name": "b"})).await;
    let b_key = other["key"].as_str().unwrap().to_string();
    let (st, b) = s.call(reqwest::Method::POST, "/v1/instances", Some(&b_key), Some(json!({}))).await;
    assert_eq!(st, 201, "{b}");
    let b = b["id"].as_str().unwrap().to_string();

    // Workspace A's only exec slot is taken by a long command...
    let long = {
        let (http, base, key, a) = (s.http().clone(), s.base.clone(), s.admin_key.clone(), a.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/instances/{a}/exec"))
                .bearer_auth(key)
                .json(&json!({"command": ["sleep", "3"]}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let resp = s
        .http()
        .post(format!("{}/v1/instances/{a}/exec", s.base))
        .bearer_auth(&s.admin_key)
        .json(&json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // ...while workspace B runs its own.
    let (st, out) = s
        .call(
            reqwest::Method::POST,
            &format!("/v1/instances/{b}/exec"),
            Some(&b_key),
            Some(json!({"command": ["true"]})),
        )
        .await;
    assert_eq!((st, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    assert_eq!(long.await.unwrap(), 200);

    // A key over its rate is told to wait; another key is not.
    let (_, key) = s.post("/v1/keys", json!({"name": "busy"})).await;
    let busy = key["key"].as_str().unwrap().to_string();
    let mut limited = None;
    for _ in 0..40 {
        let r = s.http().get(format!("{}/v1/instances", s.base)).bearer_auth(&busy).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r.headers()["retry-after"].to_str().unwrap().to_string());
            break;
        }
    }
    assert!(limited.is_some_and(|secs| secs.parse::<u64>().unwrap() >= 1), "the key was never limited");
    let (st, _) = s.get("/v1/instances").await;
    assert_eq!(st, 200, "the admin key has its own bucket");
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test]
async fn forty_parallel_large_execs_leave_the_server_alive_with_bounded_memory() {
    // The default exec buffer (48 MiB).
    let s = TestServer::start().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let pid = s.pid().unwrap();
    let baseline = rss_mib(pid);
    let peak = std::sync::Arc::new(std::sync::Mutex::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_mib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // 40 commands of 8 MiB each (320 MiB in all) with a 16 MiB cap each.
    let runs = (0..40).map(|_| {
        let (http, base, key, id) = (s.http().clone(), s.base.clone(), s.admin_key.clone(), id.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/instances/{id}/exec"))
                .bearer_auth(key)
                .json(&json!({"command": "head -c 8388608 /dev/zero | tr '\\0' a", "max_output_bytes": 16777216,
                    "timeout_secs": 120}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body["stdout"].as_str().map_or(0, str::len), body["truncated"].as_bool())
        }
    });
    let results = futures_util::future::join_all(runs).await;
    sampler.abort();
    let peak = *peak.lock().unwrap();
    assert!(results.iter().all(|(st, _, _)| *st == 200), "{results:?}");
    // The release build's figure (scripts/bench-limits.py) is the one held to the
    // 150 MiB goal; this debug build, with the allocator's slack, gets some room.
    assert!(peak < 192.0, "RSS peaked at {peak:.0} MiB (from {baseline:.0})");
    eprintln!("server RSS {baseline:.0} MiB before, {peak:.0} MiB at most during 40 parallel 8 MiB execs");
    assert!(results.iter().any(|(_, _, t)| *t == Some(true)), "past the buffer, output is truncated");
    let (st, _) = s.get("/healthz").await;
    assert_eq!(st, 200);
}
