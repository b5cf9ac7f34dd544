//! Homes are filesystems of their size (`--disk-quota loop`): writes stop there with
//! ENOSPC, the host's disk is not spent beyond what was written, the size grows on
//! resize, and a workspace's disk (soft-deleted instances included) is bounded.

use berth_test_util::docker::docker;
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::json;

fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Size in KiB of the filesystem mounted at the instance's home.
async fn home_kib(s: &TestServer, id: &str) -> u64 {
    let out = s.exec(id, json!(["sh", "-c", "df -k /home/agent | tail -1"]), None).await;
    let line = out["stdout"].as_str().unwrap().to_string();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("df said {line}"))
}

fn loop_devices_of(image: &std::path::Path) -> String {
    let out = std::process::Command::new("losetup").arg("--associated").arg(image).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_home_stops_at_its_size_and_grows_on_resize() {
    let s = TestServer::start_with(ServerOptions {
        extra_args: ["--disk-quota", "loop"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let inst = s.create_instance(json!({"size": 1})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let (st, h) = s.get(&format!("/v1/instances/{id}/health")).await;
    assert_eq!((st, h["disk_limit_mb"].as_f64()), (200, Some(10240.0)), "{h}");
    let kib = home_kib(&s, &id).await;
    assert!((9_500_000..=10_485_760).contains(&kib), "a 10 GiB home, not the host's disk: {kib} KiB");
    let image = s.data_dir().join("disks").join(format!("{id}.ext4"));
    assert!(loop_devices_of(&image).contains("/dev/loop"), "attached: {}", loop_devices_of(&image));

    // Past its size: ENOSPC, and the host's free space moves only by what was written.
    let before = free_bytes(s.data_dir());
    let out = s.exec(&id, json!(["sh", "-c", "fallocate -l 11G /home/agent/big"]), None).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(out["stderr"].as_str().unwrap().contains("No space left"), "{out}");
    let out = s
        .exec(
            &id,
            json!(["sh", "-c", "rm -f /home/agent/big; dd if=/dev/zero of=/home/agent/some bs=1M count=32 && sync"]),
            None,
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let spent = before.saturating_sub(free_bytes(s.data_dir()));
    assert!(spent < 512 << 20, "the host lost {} MiB for 32 MiB written", spent >> 20);

    // Resized: the image grows at once; the filesystem online where the kernel lets
    // berth (not on this kind of host: no CAP_SYS_RESOURCE), else at the next start.
    let (st, r) = s.call(Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(json!({"size": 2}))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 20 << 30);
    let (_, h) = s.get(&format!("/v1/instances/{id}/health")).await;
    assert_eq!(h["disk_limit_mb"].as_f64(), Some(20480.0), "{h}");
    let (st, _) = s.post(&format!("/v1/instances/{id}/restart"), json!({})).await;
    assert_eq!(st, 200);
    let kib = home_kib(&s, &id).await;
    assert!(kib > 19_000_000, "grown to 20 GiB: {kib} KiB");
    let out = s.exec(&id, json!(["sh", "-c", "wc -c < /home/agent/some"]), None).await;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "33554432", "{out}");

    // Purged: the image and its loop device are gone.
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    assert!(!image.exists(), "the image outlived its instance");
    assert_eq!(loop_devices_of(&image), "");
    let (_, vols, _) = docker(&["volume", "ls", "-q", "--filter", &format!("name=berth-{id}-home")]);
    assert_eq!(vols, "");
}

#[tokio::test]
async fn soft_deleted_instances_count_against_the_workspace_disk() {
    let s = TestServer::start_with(ServerOptions {
        extra_args: ["--workspace-disk-gb", "30"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let big = s.create_instance(json!({"size": 2})).await;
    let big_id = big["id"].as_str().unwrap().to_string();
    let small = s.create_instance(json!({"size": 1})).await;
    let small_id = small["id"].as_str().unwrap().to_string();
    let over = |body: serde_json::Value| {
        let s = &s;
        async move { s.call(Method::POST, "/v1/instances", Some(&s.key), Some(body)).await }
    };
    let (st, err) = over(json!({"size": 1})).await;
    assert_eq!((st, err["error"]["code"].as_str()), (422, Some("limit_exceeded")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("30 GiB"), "{err}");
    // Growing past it is refused too, and changes nothing.
    let (st, err) =
        s.call(Method::PATCH, &format!("/v1/instances/{small_id}"), Some(&s.key), Some(json!({"size": 2}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (422, Some("limit_exceeded")), "{err}");
    assert_eq!(s.get(&format!("/v1/instances/{small_id}")).await.1["size"]["size"], 1);

    // A soft-deleted instance keeps its home, so it still counts ...
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{big_id}"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    let (st, err) = over(json!({"size": 1})).await;
    assert_eq!((st, err["error"]["code"].as_str()), (422, Some("limit_exceeded")), "{err}");
    // ... until it is purged.
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{big_id}?purge=true"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    let (st, created) = over(json!({"size": 1})).await;
    assert_eq!(st, 201, "{created}");
}
