//! The `berth` CLI against a real server and real containers.

use berth_test_util::server::berth_bin;
use berth_test_util::TestServer;
use std::process::Command;

fn berth(s: &TestServer, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(berth_bin())
        .args(args)
        .env("BERTH_URL", &s.base)
        .env("BERTH_API_KEY", &s.admin_key)
        .output()
        .expect("berth runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_drives_a_real_instance() {
    let s = TestServer::start().await;
    let (code, out, err) = berth(&s, &["instances", "create", "--name", "cli-made", "--json"]);
    assert_eq!(code, 0, "{err}");
    let inst: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(inst["status"], "running");

    let (code, out, _) = berth(&s, &["instances", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("cli-made") && out.contains("running"), "{out}");

    // Output streams through and the exit code is passed on.
    let (code, out, err) = berth(&s, &["exec", &id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    let (code, out, _) = berth(&s, &["health", &id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["gateway"]["ok"], true);

    // A key for this instance only, listed with its scope.
    let (code, out, err) = berth(&s, &["keys", "create", "--name", "end-user", "--instance", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let key: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(key["instance"], id.as_str());
    let (code, out, _) = berth(&s, &["keys", "list"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.contains("end-user")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&id) && out.contains("SCOPE"), "{out}");
    let (code, _, err) = berth(&s, &["keys", "create", "--instance", &id, "--admin"]);
    assert_ne!(code, 0);
    assert!(err.contains("--admin") && err.contains("--instance"), "{err}");

    // Errors name the problem and exit 1.
    let (code, _, err) = berth(&s, &["instances", "resume", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid_state") && err.contains("running"), "{err}");

    let (code, _, err) = berth(&s, &["instances", "delete", &id, "--purge"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth(&s, &["instances", "get", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("instance_not_found"), "{err}");
}
