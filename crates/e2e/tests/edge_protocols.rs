//! The edge as a front door, with a real web app serving exposed ports inside a
//! real instance: who gets in (keys, workspaces, handles), what the instance
//! sees (forwarding headers, no berth credentials), HTTP/2, body limits,
//! WebSockets both ways, SSE at the pace it is sent, revocation closing open
//! streams, and slow or idle clients cut off.

use berth_test_util::app::{host_of, port_url};
use berth_test_util::{kubernetes, ServerOptions, TestServer};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn debian(extra: &[&str]) -> ServerOptions {
    ServerOptions { base_image: None, extra_args: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// An instance exposing 8080 (the test app) and 9999 (nothing), the app started.
async fn instance_with_app(s: &TestServer) -> (Value, String) {
    let inst = s.create_instance(json!({"expose": [8080, 9999]})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = host_of(&port_url(&inst, 8080));
    s.start_app(&id, 8080, &host).await;
    (inst, host)
}

#[tokio::test]
async fn exposed_ports_route_authenticate_and_forward_cleanly() {
    let s = TestServer::start_with(debian(&["--edge-body-limit-mb", "1"])).await;
    let (inst, host) = instance_with_app(&s).await;
    let id = inst["id"].as_str().unwrap();
    let handle = host.split('.').next().unwrap();
    assert_eq!(handle.len(), 20, "an opaque handle, not the instance label");
    assert!(!handle.contains(&id[5..]));
    let ports = inst["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 3);
    assert_eq!((ports[0]["port"].as_u64(), ports[0]["default"].as_bool()), (Some(3737), Some(true)));
    assert_eq!(ports[1]["default"], false);

    // Who gets in: 401 without a key or with a bad one, 404 for another
    // workspace and for handles and labels that route nowhere.
    let get = |h: &str, path: &str| s.edge(Method::GET, h, path);
    assert_eq!(get(&host, "/sub.txt").send().await.unwrap().status(), 401);
    assert_eq!(get(&host, "/sub.txt").bearer_auth("sk_nope").send().await.unwrap().status(), 401);
    let (_, other) = s.post("/v1/workspaces", json!({"name": "other"})).await;
    let other_key = other["key"].as_str().unwrap();
    assert_eq!(get(&host, "/sub.txt").bearer_auth(other_key).send().await.unwrap().status(), 404);
    let port = s.edge_port();
    let unknown_handle = format!("{}.localhost:{port}", "q".repeat(20));
    let r = get(&unknown_handle, "/").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "instance_not_found");
    let r = get(&format!("zzzzzzzzzz.localhost:{port}"), "/").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = get(&host, "/sub.txt").header("x-api-key", &s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "sub-ok");

    // What the instance sees: the edge's forwarding headers (client-supplied ones
    // replaced), a request id it also returns, and no berth credentials.
    let r = get(&host, "/headers")
        .bearer_auth(&s.admin_key)
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "spoofed")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("x-kept", "yes")
        .header("cookie", "app=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    assert_eq!(seen["host"], host.as_str());
    assert_eq!(seen["forwarded"], format!("for=127.0.0.1;host=\"{host}\";proto=http"));
    assert!(request_id.starts_with("req_"));
    assert_eq!(seen["x-request-id"], request_id.as_str());
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["cookie"], "app=1");
    assert!(seen.get("x-drop-me").is_none(), "headers named in Connection are dropped: {seen}");
    assert!(seen.get("authorization").is_none() && seen.get("x-api-key").is_none(), "{seen}");
    let r =
        get(&host, "/headers").header("x-api-key", &s.admin_key).basic_auth("app", Some("pw")).send().await.unwrap();
    let seen: Value = r.json().await.unwrap();
    assert!(seen["authorization"].as_str().unwrap().starts_with("Basic "), "the app's own auth passes: {seen}");
    assert!(seen.get("x-api-key").is_none());

    // HTTP/2 with prior knowledge (h2c) from the client, HTTP/1.1 to the instance.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(host.split(':').next().unwrap(), format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let r = h2.get(format!("http://{host}/headers")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["host"], host.as_str(), "the :authority becomes the Host");

    // Bodies: under the limit pass, over it 413 (announced or streamed).
    let post = |body: reqwest::Body| s.edge(Method::POST, &host, "/upload").bearer_auth(&s.admin_key).body(body);
    let r = post(vec![7u8; 512 * 1024].into()).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["received"], 512 * 1024);
    let r = post(vec![7u8; 2 * 1024 * 1024].into()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
    let chunks = futures_util::stream::iter((0..32).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 * 1024])));
    let r = post(reqwest::Body::wrap_stream(chunks)).send().await;
    assert!(r.is_err() || r.unwrap().status() == 413, "a streamed body over the limit is refused");

    // A port nobody listens on.
    let r = get(&host_of(&port_url(&inst, 9999)), "/").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "port_unreachable");

    // Changing the exposed ports keeps the URLs of ports that stay.
    let (status, patched) = s
        .call(Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.admin_key), Some(json!({"expose": [8080, 9000]})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(port_url(&patched, 8080), port_url(&inst, 8080));
    let gone = host_of(&port_url(&inst, 9999));
    assert_eq!(get(&gone, "/").bearer_auth(&s.admin_key).send().await.unwrap().status(), 404);
    let (status, bad) = s
        .call(Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.admin_key), Some(json!({"expose": [3737]})))
        .await;
    assert_eq!((status, bad["error"]["details"]["field"].as_str()), (400, Some("expose[0]")));

    // Observability: counters by status class without per-instance labels, and
    // per-instance traffic in the instance's health.
    let metrics = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.starts_with("berth_edge_requests_total{class=\"2xx\"}")).unwrap();
    assert!(line.split(' ').next_back().unwrap().parse::<f64>().unwrap() >= 5.0, "{line}");
    assert!(!metrics.contains(id), "no per-instance labels");
    assert!(metrics.contains("berth_edge_request_duration_seconds_bucket"));
    tokio::time::sleep(Duration::from_millis(1500)).await; // one flush of the traffic batch
                                                           // Docker counts network bytes live; a kubelet samples them every few seconds.
    let deadline = Instant::now() + Duration::from_secs(if kubernetes::enabled() { 45 } else { 0 });
    let health = loop {
        let (_, health) = s.get(&format!("/v1/instances/{id}/health")).await;
        let counted = |k: &str| health[k].as_u64().is_some_and(|n| n > 0);
        if (counted("network_rx_bytes") && counted("network_tx_bytes")) || Instant::now() >= deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Every request above that reached the instance (not the 401s and 404s): at least nine.
    assert!(health["requests_total"].as_u64().unwrap() >= 9, "{health}");
    assert!(health["network_rx_bytes"].as_u64().unwrap() > 0, "{health}");
    assert!(health["network_tx_bytes"].as_u64().unwrap() > 0, "{health}");
}

/// Opens a WebSocket through the edge to `path` on `host`.
async fn ws_connect(
    s: &TestServer,
    host: &str,
    path: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut req = format!("ws://{host}{path}").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.edge_port())).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.expect("WebSocket handshake through the edge");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_message(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame in time").map(|m| m.unwrap())
}

#[tokio::test]
async fn websockets_pass_through_both_ways_and_closes_reach_both_ends() {
    // A short idle timeout: an open WebSocket must outlive it.
    let s = TestServer::start_with(debian(&["--idle-timeout-secs", "1"])).await;
    let (inst, host) = instance_with_app(&s).await;
    let id = inst["id"].as_str().unwrap();

    let mut ws = ws_connect(&s, &host, "/ws", &s.admin_key).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("echo:hello")));
    tokio::time::sleep(Duration::from_secs(3)).await; // quiet, past the idle timeout
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(b"echo:\x00\x01\x02".to_vec())));
    // The client closes: the server sees it, and its answer comes back.
    ws.close(None).await.unwrap();
    assert!(matches!(next_message(&mut ws).await, Some(Message::Close(_))));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.app_log(id).await.contains("WS close from client") {
        assert!(Instant::now() < deadline, "the close never reached the instance");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The server closes: the client sees the close frame and then the end.
    let mut ws = ws_connect(&s, &host, "/ws-server-close", &s.admin_key).await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("echo:x")));
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.reason.as_str(), "bye"),
        other => panic!("expected the server's close, got {other:?}"),
    }

    // A key revoked while its WebSocket is open closes it.
    let (_, key) = s.post("/v1/keys", json!({"name": "ws"})).await;
    let mut ws = ws_connect(&s, &host, "/ws", key["key"].as_str().unwrap()).await;
    ws.send(Message::text("a")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("echo:a")));
    let (status, _) =
        s.call(Method::DELETE, &format!("/v1/keys/{}", key["id"].as_str().unwrap()), Some(&s.admin_key), None).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the socket ends");
    assert!(matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))), "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "closed {:?} after the revocation", started.elapsed());
}

#[tokio::test]
async fn sse_arrives_at_the_pace_it_is_sent_and_revocation_cuts_it() {
    let s = TestServer::start_with(debian(&["--idle-timeout-secs", "2", "--header-read-timeout-secs", "2"])).await;
    let (_inst, host) = instance_with_app(&s).await;

    // Four events 3 s apart: quiet gaps longer than every timeout of the edge.
    let started = Instant::now();
    let r = s.edge(Method::GET, &host, "/sse?n=4&gap=3").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while text.contains("\n\n") {
            let (event, rest) = text.split_once("\n\n").map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
            arrivals.push((started.elapsed().as_secs_f64(), event));
            text = rest;
        }
    }
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    assert!(arrivals[0].0 < 1.5, "the first event is not held back: {arrivals:?}");
    for pair in arrivals.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!((2.5..4.0).contains(&gap), "events arrive as sent, not batched: {arrivals:?}");
    }

    // A revoked key's open stream ends at once.
    let (_, key) = s.post("/v1/keys", json!({"name": "stream"})).await;
    let r = s
        .edge(Method::GET, &host, "/sse?n=100&gap=0.5")
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    assert!(body.next().await.unwrap().is_ok());
    let (status, _) =
        s.call(Method::DELETE, &format!("/v1/keys/{}", key["id"].as_str().unwrap()), Some(&s.admin_key), None).await;
    assert_eq!(status, 200);
    let revoked = Instant::now();
    while let Some(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("the stream ends") {}
    assert!(revoked.elapsed() < Duration::from_secs(1), "the stream lasted {:?} after revocation", revoked.elapsed());
    let r = s.edge(Method::GET, &host, "/sub.txt").bearer_auth(key["key"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec!["--header-read-timeout-secs".into(), "1".into(), "--idle-timeout-secs".into(), "2".into()],
        ..Default::default()
    })
    .await;
    for port in [s.edge_port(), s.base.rsplit(':').next().unwrap().parse().unwrap()] {
        // Half a request head, then nothing: closed after the header-read timeout.
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"));
        assert!(started.elapsed() < Duration::from_secs(4), "port {port}: open for {:?}", started.elapsed());

        // A finished request, then silence on the kept-alive connection.
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "), "an answer first");
        let started = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(end.is_ok() && started.elapsed() < Duration::from_secs(5), "port {port}: idle connection kept");
    }
}
