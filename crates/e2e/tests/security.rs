//! Tenancy, authentication and isolation between instances. Tests that need no
//! special flags share one server (each in a workspace of its own).

use berth_test_util::docker::{docker, exec, inspect, network_gateway, TEST_NETWORK};
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::json;
use std::io::Write;

#[tokio::test]
async fn keys_are_required_and_other_workspaces_see_nothing() {
    let s = TestServer::shared().await;
    let inst = s.create_instance(json!({})).await;
    let id = inst["id"].as_str().unwrap().to_string();

    // No key, a bad key: 401 with the error envelope.
    let (st, body) = s.call(Method::GET, "/v1/instances", None, None).await;
    assert_eq!((st, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (st, _) = s.call(Method::GET, "/v1/instances", Some("sk_nope"), None).await;
    assert_eq!(st, 401);
    // X-API-Key works like Bearer.
    let r = s.http().get(format!("{}/v1/instances/{id}", s.base)).header("X-API-Key", &s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A second workspace, made by the admin.
    let other = s.create_workspace("acme").await;
    assert!(other.starts_with("sk_"));
    // Its key sees 404 on every route of the first workspace's instance.
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, format!("/v1/instances/{id}")),
        (Method::PATCH, format!("/v1/instances/{id}")),
        (Method::DELETE, format!("/v1/instances/{id}")),
        (Method::POST, format!("/v1/instances/{id}/stop")),
        (Method::POST, format!("/v1/instances/{id}/start")),
        (Method::POST, format!("/v1/instances/{id}/restart")),
        (Method::POST, format!("/v1/instances/{id}/pause")),
        (Method::POST, format!("/v1/instances/{id}/resume")),
        (Method::POST, format!("/v1/instances/{id}/restore")),
        (Method::POST, format!("/v1/instances/{id}/update")),
        (Method::POST, format!("/v1/instances/{id}/exec")),
        (Method::GET, format!("/v1/instances/{id}/logs")),
        (Method::GET, format!("/v1/instances/{id}/health")),
        (Method::GET, format!("/v1/instances/{id}/events")),
        (Method::GET, format!("/v1/instances/{id}/shell")),
    ];
    for (m, path) in &routes {
        let body = match path.rsplit('/').next() {
            Some("exec") => Some(json!({"command": ["true"]})),
            _ if *m == Method::PATCH => Some(json!({"name": "x"})),
            _ => None,
        };
        let (st, err) = s.call(m.clone(), path, Some(&other), body).await;
        assert_eq!(st, 404, "{m} {path}: {err}");
        assert_eq!(err["error"]["code"], "instance_not_found");
    }
    let (_, list) = s.call(Method::GET, "/v1/instances", Some(&other), None).await;
    assert_eq!(list["data"], json!([]));
    // Non-admin keys cannot make workspaces.
    for key in [&other, &s.key] {
        let (st, _) = s.call(Method::POST, "/v1/workspaces", Some(key), Some(json!({"name": "x"}))).await;
        assert_eq!(st, 403);
    }
    // The instance is untouched.
    let (_, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["status"], "running");
}

#[tokio::test]
async fn keys_are_shown_once_and_revocable() {
    let s = TestServer::shared().await;
    let (st, key) = s.post("/v1/keys", json!({"name": "ci"})).await;
    assert_eq!(st, 201);
    let secret = key["key"].as_str().unwrap().to_string();
    let (_, list) = s.get("/v1/keys").await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.get("key").is_none()), "secrets never listed: {list}");
    let (st, _) = s.call(Method::GET, "/v1/instances", Some(&secret), None).await;
    assert_eq!(st, 200);
    let (st, _) =
        s.call(Method::DELETE, &format!("/v1/keys/{}", key["id"].as_str().unwrap()), Some(&s.key), None).await;
    assert_eq!(st, 200);
    let (st, _) = s.call(Method::GET, "/v1/instances", Some(&secret), None).await;
    assert_eq!(st, 401);
    // Stored hashed: the secret is not in the database file.
    let db = std::fs::read(s.data_dir().join("berth.db")).unwrap();
    let wal = std::fs::read(s.data_dir().join("berth.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle));
}

#[tokio::test]
async fn instances_reach_neither_each_other_nor_the_control_plane() {
    let s = TestServer::shared().await;
    let a = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let b = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let b_ip = inspect(&format!("berth-{b}"), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let gw = inspect(&format!("berth-{a}"), "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
    assert!(!b_ip.is_empty() && !gw.is_empty());
    // B's agent answers inside B, but A cannot open a connection to it.
    assert_eq!(exec(&b, "timeout 3 wget -q -O - http://127.0.0.1:3737/health >/dev/null").0, 0);
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{b_ip}:3737/health"));
    assert_ne!(code, 0, "A reached B: {out}");
    // The hosting API is not reachable from inside (host side of the bridge).
    let port = s.base.rsplit(':').next().unwrap();
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{gw}:{port}/healthz"));
    assert_ne!(code, 0, "instance reached the hosting API: {out}");
    // No Docker socket, not privileged.
    assert_ne!(exec(&a, "test -e /var/run/docker.sock").0, 0);
    assert_ne!(exec(&a, "test -e /run/docker.sock").0, 0);
    let (_, caps) = exec(&a, "grep CapEff /proc/self/status");
    assert!(!caps.contains("0000003fffffffff") && !caps.contains("000001ffffffffff"), "{caps}");
}

#[tokio::test]
async fn a_control_plane_listening_on_all_addresses_is_still_out_of_reach() {
    let s = TestServer::start_with(ServerOptions { listen_host: "0.0.0.0".into(), ..Default::default() }).await;
    let a = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let gw = inspect(&format!("berth-{a}"), "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
    let port = s.base.rsplit(':').next().unwrap();
    // The host itself reaches it on the bridge address; the instance does not.
    let r = s.http().get(format!("http://{gw}:{port}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for p in [port.to_string(), s.edge_port().to_string()] {
        let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{gw}:{p}/healthz"));
        assert_ne!(code, 0, "instance reached port {p} of the control plane: {out}");
    }
}

/// A TCP service on the host's side of the tests' bridge (its gateway address), on a
/// free port that is none of berth's: it answers `egress-ok` to every connection.
fn host_service() -> (String, u16) {
    let gw = network_gateway(TEST_NETWORK);
    let listener = std::net::TcpListener::bind((gw.as_str(), 0)).expect("bind on the bridge's gateway");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"egress-ok\n");
        }
    });
    (gw, port)
}

/// Whether instance `id` gets the host service's answer from `ip:port`.
fn reaches(id: &str, ip: &str, port: u16) -> (bool, String) {
    let (_, out) = exec(id, &format!("timeout 3 nc {ip} {port} </dev/null"));
    (out.contains("egress-ok"), out)
}

#[tokio::test]
async fn instances_reach_the_host_only_when_their_egress_policy_allows_it_applied_without_restart() {
    let s = TestServer::shared().await;
    let (gw, port) = host_service();
    let inst = s.create_instance(json!({})).await;
    let a = inst["id"].as_str().unwrap().to_string();
    assert_eq!(inst["network"], json!({"egress": "internet"}));
    let started = inspect(&format!("berth-{a}"), "{{.State.StartedAt}}");
    let (ok, out) = reaches(&a, &gw, port);
    assert!(!ok, "the default policy let the instance reach the host: {out}");

    // Allowed: reachable at once, no restart.
    let allow = json!({"egress": {"allow": [format!("{gw}/32:{port}")]}});
    let (st, got) =
        s.call(Method::PATCH, &format!("/v1/instances/{a}"), Some(&s.key), Some(json!({"network": allow}))).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["network"], allow);
    let (ok, out) = reaches(&a, &gw, port);
    assert!(ok, "allowed, but the host service is out of reach: {out}");
    assert_eq!(inspect(&format!("berth-{a}"), "{{.State.StartedAt}}"), started, "the PATCH restarted the instance");
    // Another port of the host stays closed (berth's own API among them).
    let api_port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{gw}:{api_port}/healthz"));
    assert_ne!(code, 0, "the allow list opened the hosting API: {out}");
    let (_, got) = s.get(&format!("/v1/instances/{a}")).await;
    assert_eq!(got["network"], allow, "stored");

    // Straight from the allow list to `none`: its chain is rewritten, out of reach.
    let (st, _) = s
        .call(Method::PATCH, &format!("/v1/instances/{a}"), Some(&s.key), Some(json!({"network": {"egress": "none"}})))
        .await;
    assert_eq!(st, 200);
    let (ok, out) = reaches(&a, &gw, port);
    assert!(!ok, "`none`, but the host service is still reachable: {out}");

    // Back to the default: out of reach again.
    let (st, got) = s
        .call(
            Method::PATCH,
            &format!("/v1/instances/{a}"),
            Some(&s.key),
            Some(json!({"network": {"egress": "internet"}})),
        )
        .await;
    assert_eq!((st, &got["network"]), (200, &json!({"egress": "internet"})));
    let (ok, out) = reaches(&a, &gw, port);
    assert!(!ok, "back to internet, but the host service is still reachable: {out}");

    // Another instance stays out of reach, even from one whose allow list names it.
    let b = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let b_ip = inspect(&format!("berth-{b}"), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let allow_b = json!({"egress": {"allow": [format!("{b_ip}/32")]}});
    let (st, _) =
        s.call(Method::PATCH, &format!("/v1/instances/{a}"), Some(&s.key), Some(json!({"network": allow_b}))).await;
    assert_eq!(st, 200);
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{b_ip}:3737/health"));
    assert_ne!(code, 0, "A reached B: {out}");

    // `none`: nothing, set at create; survives a restart (new rules for the address it gets).
    let c = s.create_instance(json!({"network": {"egress": "none"}})).await;
    assert_eq!(c["network"], json!({"egress": "none"}));
    let c = c["id"].as_str().unwrap().to_string();
    let (st, _) = s.post(&format!("/v1/instances/{c}/restart"), json!({})).await;
    assert_eq!(st, 200);
    let c_ip = inspect(&format!("berth-{c}"), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let (_, rules) = iptables("iptables");
    assert!(
        rules
            .iter()
            .any(|l| l.contains(&format!("-s {c_ip}/32")) && l.contains(&format!("berth:{}/{c}", s.install_id))),
        "no rule for {c} at {c_ip}: {rules:#?}"
    );
}

/// `CMD -S` (iptables or ip6tables): (worked, lines).
fn iptables(cmd: &str) -> (bool, Vec<String>) {
    match std::process::Command::new(cmd).args(["-w", "-S"]).output() {
        Ok(o) if o.status.success() => (true, String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()),
        _ => (false, vec![]),
    }
}

/// A network's bridge interface, and the suffix of berth's chains (the bridge without `br-`).
fn bridge_of(network: &str) -> (String, String) {
    let id = docker(&["network", "inspect", "-f", "{{.Id}}", network]).1;
    let named =
        docker(&["network", "inspect", "-f", "{{index .Options \"com.docker.network.bridge.name\"}}", network]).1;
    let bridge = match named.as_str() {
        "" | "<no value>" => format!("br-{}", &id[..12]),
        n => n.to_string(),
    };
    let tag = bridge.strip_prefix("br-").unwrap_or(&bridge).to_string();
    (bridge, tag)
}

/// The chain forwarded traffic is hooked in: DOCKER-USER when Docker made it, else FORWARD.
fn forward_hook(rules: &[String]) -> &'static str {
    if rules.iter().any(|l| l == "-N DOCKER-USER") {
        "DOCKER-USER"
    } else {
        "FORWARD"
    }
}

/// Asserts `rule` is in `chain`, before anything but other hooks of berth.
fn first_in(rules: &[String], chain: &str, rule: &str) {
    let lines: Vec<&String> = rules.iter().filter(|l| l.starts_with(&format!("-A {chain} "))).collect();
    let at = lines.iter().position(|l| *l == rule).unwrap_or_else(|| panic!("missing `{rule}` in {lines:#?}"));
    assert!(lines[..at].iter().all(|l| l.contains("-j BERTH-")), "`{rule}` is not first: {lines:#?}");
}

fn wait_for_rule(cmd: &str, rule: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if iptables(cmd).1.iter().any(|l| l == rule) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{cmd}: `{rule}` not back within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test]
async fn the_egress_rules_deny_local_ranges_take_the_operators_flags_and_come_back_when_deleted() {
    // A network of its own: one bridge, one policy (these flags differ from the shared server's).
    let network = "berth-e2e-egress-flags";
    let s = TestServer::start_with(ServerOptions {
        network: network.into(),
        extra_args: ["--egress-allow", "192.0.2.0/24:443", "--egress-deny", "198.51.100.7,[2001:db8::/32]:25"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await;
    let (bridge, tag) = bridge_of(network);
    let (egress, input, inst) =
        (format!("BERTH-EGRESS-{tag}"), format!("BERTH-INPUT-{tag}"), format!("BERTH-INST-{tag}"));
    let (_, v4) = iptables("iptables");
    let pos = |rules: &[String], rule: &str| {
        rules.iter().position(|l| l == rule).unwrap_or_else(|| panic!("missing `{rule}` in {rules:#?}"))
    };
    let reject = "-j REJECT --reject-with icmp-port-unreachable";
    // Forwarded traffic is hooked first in DOCKER-USER (Docker keeps it first in FORWARD),
    // or first in FORWARD without it; traffic to the host first in INPUT.
    let fwd4 = forward_hook(&v4);
    first_in(&v4, fwd4, &format!("-A {fwd4} -i {bridge} -j {egress}"));
    first_in(&v4, "INPUT", &format!("-A INPUT -i {bridge} -j {input}"));
    pos(&v4, &format!("-A INPUT -i {bridge} -j {input}"));
    let mut denies = vec![];
    for net in ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"] {
        denies.push(pos(&v4, &format!("-A {egress} -d {net} {reject}")));
    }
    let allow = pos(&v4, &format!("-A {egress} -d 192.0.2.0/24 -p tcp -m tcp --dport 443 -j ACCEPT"));
    assert!(denies.iter().all(|d| allow < *d), "the operator's allow comes before the default denies");
    pos(&v4, &format!("-A {egress} -d 198.51.100.7/32 {reject}"));
    for doc in ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] {
        let denied = format!("-A {egress} -d {doc} {reject}");
        assert!(!v4.contains(&denied), "documentation ranges are not denied by default: {denied}");
    }
    // The host's resolvers stay reachable on port 53, before the denies.
    let resolvers: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver").map(|r| r.trim().to_string()))
        .filter(|r| r.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    for r in &resolvers {
        let dns = pos(&v4, &format!("-A {egress} -d {r}/32 -p udp -m udp --dport 53 -j ACCEPT"));
        assert!(denies.iter().all(|d| dns < *d));
    }
    // The host itself: only replies, DNS and nothing else; berth's ports refused.
    assert_eq!(v4.iter().rfind(|l| l.starts_with(&format!("-A {input} "))).unwrap(), &format!("-A {input} {reject}"));
    let (v6_works, v6) = iptables("ip6tables");
    if v6_works {
        let reject6 = "-j REJECT --reject-with icmp6-port-unreachable";
        for net in ["fe80::/10", "fc00::/7", "::1/128", "ff00::/8"] {
            pos(&v6, &format!("-A {egress} -d {net} {reject6}"));
        }
        pos(&v6, &format!("-A {egress} -d 2001:db8::/32 -p tcp -m tcp --dport 25 {reject6}"));
        let fwd6 = forward_hook(&v6);
        first_in(&v6, fwd6, &format!("-A {fwd6} -i {bridge} -j {egress}"));
    }

    // An instance with a policy of its own gets its chain and a jump from its address.
    let c = s.create_instance(json!({"network": {"egress": "none"}})).await["id"].as_str().unwrap().to_string();
    let c_ip = inspect(&format!("berth-{c}"), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let jump =
        format!("-A {inst} -s {c_ip}/32 -m comment --comment \"berth:{}/{c}\" -j BERTH-I-{}", s.install_id, &c[5..]);
    pos(&iptables("iptables").1, &jump);

    // Deleted by hand (the hooks, a default deny, the instance's jump): back within a pass.
    let run = |cmd: &str, args: &[&str]| {
        let ok = std::process::Command::new(cmd).args(args).status().unwrap().success();
        assert!(ok, "{cmd} {args:?}");
    };
    run("iptables", &["-w", "-D", fwd4, "-i", &bridge, "-j", &egress]);
    run("iptables", &["-w", "-D", "INPUT", "-i", &bridge, "-j", &input]);
    run(
        "iptables",
        &["-w", "-D", &egress, "-d", "169.254.0.0/16", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
    );
    run(
        "iptables",
        &[
            "-w",
            "-D",
            &inst,
            "-s",
            &format!("{c_ip}/32"),
            "-m",
            "comment",
            "--comment",
            &format!("berth:{}/{c}", s.install_id),
            "-j",
            &format!("BERTH-I-{}", &c[5..]),
        ],
    );
    if v6_works {
        run("ip6tables", &["-w", "-D", forward_hook(&v6), "-i", &bridge, "-j", &egress]);
    }
    wait_for_rule("iptables", &format!("-A {fwd4} -i {bridge} -j {egress}"));
    wait_for_rule("iptables", &format!("-A INPUT -i {bridge} -j {input}"));
    wait_for_rule("iptables", &format!("-A {egress} -d 169.254.0.0/16 {reject}"));
    wait_for_rule("iptables", &jump);
    if v6_works {
        let fwd6 = forward_hook(&v6);
        wait_for_rule("ip6tables", &format!("-A {fwd6} -i {bridge} -j {egress}"));
    }
    // A rule put above the hook (as another program inserting at the top of INPUT would):
    // the hook goes back to the top within a pass. (The rule only drops UDP to port 9.)
    run("iptables", &["-w", "-I", "INPUT", "1", "-i", &bridge, "-p", "udp", "--dport", "9", "-j", "DROP"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = iptables("iptables").1;
        let input_rules: Vec<&String> = now.iter().filter(|l| l.starts_with("-A INPUT ")).collect();
        if input_rules.iter().position(|l| l.ends_with(&format!("-j {input}")))
            < input_rules.iter().position(|l| l.contains("--dport 9 -j DROP"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the INPUT hook is not first again within 10 s: {input_rules:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    run("iptables", &["-w", "-D", "INPUT", "-i", &bridge, "-p", "udp", "--dport", "9", "-j", "DROP"]);

    // Rules of this installation for an instance it does not know, and instance chains
    // nothing jumps to, are leftovers: removed.
    run("iptables", &["-w", "-N", "BERTH-I-zzzzzzzzzz"]);
    let stale = format!("berth:{}/inst_zzzzzzzzzz", s.install_id);
    run(
        "iptables",
        &["-w", "-A", &inst, "-s", "192.0.2.99/32", "-m", "comment", "--comment", &stale, "-j", "BERTH-I-zzzzzzzzzz"],
    );
    run("iptables", &["-w", "-N", "BERTH-I-yyyyyyyyyy"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while iptables("iptables").1.iter().any(|l| l.contains("BERTH-I-zzzzzzzzzz") || l.contains("BERTH-I-yyyyyyyyyy")) {
        assert!(std::time::Instant::now() < deadline, "leftovers not removed within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    pos(&iptables("iptables").1, &jump);

    // A rule another server left (killed, its containers removed behind it) for an
    // address no container holds: the next container to get the address would inherit
    // its policy. Removed within a prune (every 10 s), with its chain; ours stays.
    run("iptables", &["-w", "-N", "BERTH-I-xxxxxxxxxx"]);
    run("iptables", &["-w", "-A", "BERTH-I-xxxxxxxxxx", "-j", "REJECT"]);
    let foreign = "berth:gone-server/inst_xxxxxxxxxx";
    run(
        "iptables",
        &["-w", "-A", &inst, "-s", "192.0.2.98/32", "-m", "comment", "--comment", foreign, "-j", "BERTH-I-xxxxxxxxxx"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    while iptables("iptables").1.iter().any(|l| l.contains("BERTH-I-xxxxxxxxxx")) {
        assert!(std::time::Instant::now() < deadline, "a vacant address's rule not removed within 25 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    pos(&iptables("iptables").1, &jump);

    // Deleting the instance removes its own rules.
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{c}?purge=true"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    let (_, after) = iptables("iptables");
    assert!(!after.iter().any(|l| l.contains(&format!("BERTH-I-{}", &c[5..]))), "{after:#?}");
}

#[tokio::test]
async fn bad_egress_values_are_refused_naming_them() {
    let s = TestServer::shared().await;
    for (body, needle, field) in [
        (json!({"egress": "everywhere"}), "everywhere", "network.egress"),
        (json!({"egress": {"allow": ["10.0.0.0/08"]}}), "10.0.0.0/08", "network.egress.allow[0]"),
        (json!({"egress": {"allow": ["10.0.0.0/8", "[fd00::/8]:0"]}}), "[fd00::/8]:0", "network.egress.allow[1]"),
        (json!({"egress": {"allow": ["host.example:80"]}}), "host.example:80", "network.egress.allow[0]"),
        (json!({"egress": {"allow": [5432]}}), "network.egress.allow[0]", "network.egress.allow[0]"),
        (json!({"egress": {"deny": []}}), "deny", "network.egress.deny"),
        (json!({"egress": 7}), "network.egress", "network.egress"),
    ] {
        let (st, err) = s.post("/v1/instances", json!({"network": body})).await;
        assert_eq!((st, err["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(needle), "{body}: {err}");
        assert_eq!(err["error"]["details"]["field"], field, "{body}: {err}");
    }
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let (st, err) = s
        .call(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            Some(&s.key),
            Some(json!({"network": {"egress": {"allow": ["1.2.3.4:99999"]}}})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("1.2.3.4:99999"), "{err}");
    let (_, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["network"], json!({"egress": "internet"}), "unchanged");

    // The operator's flags: a bad value stops the server before it starts, naming it.
    for (args, env, needle) in [
        (vec!["--egress-allow", "10.0.0.0/33"], None, "10.0.0.0/33"),
        (vec!["--egress-deny", "fd00::/8:443"], None, "fd00::/8:443"),
        (vec![], Some(("BERTH_EGRESS_ALLOW", "10.1.2.0/24:5432,nonsense")), "nonsense"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(berth_test_util::server::berth_bin());
        cmd.args([
            "server",
            "--data",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--network",
            "berth-e2e-never",
        ]);
        cmd.args(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }

    // An existing network that lets containers talk to each other, and is not berth's, is refused.
    let foreign = format!("berth-e2e-foreign-{}", std::process::id());
    assert!(docker(&["network", "create", &foreign]).0);
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_test_util::server::berth_bin())
        .args([
            "server",
            "--data",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ])
        .args(["--network", &foreign, "--agent-bin", berth_test_util::server::agent_bin().to_str().unwrap()])
        .output()
        .unwrap();
    docker(&["network", "rm", &foreign]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on {foreign}");
    assert!(stderr.contains(&format!("`{foreign}`")) && stderr.contains("enable_icc"), "{stderr}");
}
