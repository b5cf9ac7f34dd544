//! Many creates at once; pagination that holds still while others insert.

use berth_test_util::TestServer;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

#[tokio::test]
async fn twenty_concurrent_creates_all_succeed_and_pages_stay_stable() {
    let s = Arc::new(TestServer::start().await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.post("/v1/instances", json!({"user": format!("u{}", i % 2)})).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let (st, inst) = t.await.unwrap();
        assert_eq!(st, 201, "{inst}");
        assert_eq!(inst["status"], "running");
        ids.insert(inst["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20, "ids are distinct");

    // Page through with limit 7 while a new instance is created between pages.
    let (st, p1) = s.get("/v1/instances?limit=7").await;
    assert_eq!(st, 200);
    assert_eq!(p1["has_more"], true);
    let newcomer = s.create_instance(json!({})).await;
    let mut seen: Vec<String> = vec![];
    let mut page = p1;
    loop {
        for i in page["data"].as_array().unwrap() {
            seen.push(i["id"].as_str().unwrap().to_string());
        }
        let Some(cursor) = page["next_cursor"].as_str() else { break };
        page = s.get(&format!("/v1/instances?limit=7&cursor={cursor}")).await.1;
    }
    assert_eq!(seen.len(), 20, "every original instance once, the newcomer not spliced in");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 20);
    assert!(!seen.contains(&newcomer["id"].as_str().unwrap().to_string()));
    // Newest first (insertion order): created_at, taken when each create began (before
    // its admission and insert, which concurrent creates may pass in another order), never
    // increases along the list by more than the second such a race can straddle.
    let (_, all) = s.get("/v1/instances?limit=100").await;
    let times: Vec<i64> = all["data"].as_array().unwrap().iter().map(|i| i["created_at"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] + 1 >= w[1]), "{times:?}");
    assert_eq!(all["data"][0]["id"], newcomer["id"]);
    // Filters.
    let (_, u0) = s.get("/v1/instances?user=u0&limit=100").await;
    assert_eq!(u0["data"].as_array().unwrap().len(), 10);
    let (_, running) = s.get("/v1/instances?status=running&template=berth-agent&limit=100").await;
    assert_eq!(running["data"].as_array().unwrap().len(), 21);
}
