//! Nobody can take the platform down by holding connections: idle and half-sent
//! connections are closed by the header timeout while other clients are served.

use berth_test_util::{ServerOptions, TestServer};
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
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());

    // And every idle connection is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    for mut c in idle {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, c.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"), "{n:?}");
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
}
