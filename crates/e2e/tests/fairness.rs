//! Docker as a shared resource: one workspace polling `/health` in a loop from many
//! tasks does not stall another workspace's creates. (The figure against the 1.5x
//! goal comes from `scripts/bench-fairness.py`; this test guards against the
//! starvation it fixed with a bound loose enough for a loaded CI machine.)

use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Median milliseconds of `n` creates (each purged after) in the workspace of `key`.
async fn create_p50(s: &TestServer, key: &str, n: usize) -> f64 {
    let mut times = vec![];
    for _ in 0..n {
        let started = Instant::now();
        let (st, inst) = s.call(Method::POST, "/v1/instances", Some(key), Some(json!({}))).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(st, 201, "{inst}");
        times.push(ms);
        let id = inst["id"].as_str().unwrap();
        let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(key), None).await;
        assert_eq!(st, 200);
    }
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

#[tokio::test]
async fn a_health_storm_in_one_workspace_does_not_stall_anothers_creates() {
    // No per-key rate limit: only the Docker budgets stand between A and B.
    let s = Arc::new(
        TestServer::start_with(ServerOptions {
            extra_args: ["--key-rate", "0"].map(String::from).to_vec(),
            ..Default::default()
        })
        .await,
    );
    let key_a = s.create_workspace("storm").await;
    let key_b = s.create_workspace("quiet").await;
    let (st, a) = s.call(Method::POST, "/v1/instances", Some(&key_a), Some(json!({}))).await;
    assert_eq!(st, 201, "{a}");
    let a_id = a["id"].as_str().unwrap().to_string();

    create_p50(&s, &key_b, 1).await; // warm up
    let unloaded = create_p50(&s, &key_b, 5).await;

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut storm = vec![];
    for _ in 0..8 {
        let (s, key, id, stop, calls) = (s.clone(), key_a.clone(), a_id.clone(), stop.clone(), calls.clone());
        storm.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (st, h) = s.call(Method::GET, &format!("/v1/instances/{id}/health"), Some(&key), None).await;
                assert_eq!(st, 200, "{h}");
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let storm_started = Instant::now();
    let loaded = create_p50(&s, &key_b, 5).await;
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.await.unwrap();
    }
    let rate = calls.load(Ordering::Relaxed) as f64 / storm_started.elapsed().as_secs_f64();
    eprintln!("B create p50: {unloaded:.0} ms unloaded, {loaded:.0} ms during A's storm ({rate:.0} health calls/s)");
    assert!(rate > 20.0, "the storm did not storm: {rate:.0} calls/s");
    // Before fair Docker budgets and cached stats, B's creates took 4-5x as long.
    assert!(loaded <= unloaded * 3.0 + 200.0, "B's creates stalled: {unloaded:.0} ms → {loaded:.0} ms");
}
