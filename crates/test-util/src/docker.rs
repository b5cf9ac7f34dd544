//! Checks made from outside berth with the docker CLI, to see what really runs.

use std::process::Command;

/// Runs `docker ARGS` and returns (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker").args(args).output().expect("docker CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// `docker exec` in an instance's container (on the Kubernetes runtime, `kubectl exec`
/// in its pod); (exit code, stdout+stderr).
pub fn exec(instance_id: &str, script: &str) -> (i32, String) {
    if crate::kubernetes::enabled() {
        return crate::kubernetes::exec(instance_id, script);
    }
    let out = Command::new("docker")
        .args(["exec", &format!("berth-{instance_id}"), "sh", "-c", script])
        .output()
        .expect("docker CLI runs");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text.trim().to_string())
}

/// Names of containers carrying label `key=value`.
pub fn containers_with_label(key: &str, value: &str) -> Vec<String> {
    let (_, out, _) = docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("label={key}={value}")]);
    out.lines().map(str::to_string).filter(|s| !s.is_empty()).collect()
}

/// Names of volumes carrying label `key=value`.
pub fn volumes_with_label(key: &str, value: &str) -> Vec<String> {
    let (_, out, _) = docker(&["volume", "ls", "-q", "--filter", &format!("label={key}={value}")]);
    out.lines().map(str::to_string).filter(|s| !s.is_empty()).collect()
}

/// `docker inspect -f FORMAT NAME`.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name]).1
}

/// The Docker network test servers put instances on (made by the first server).
/// Not `berth-test`, which servers of older checkouts share without egress rules.
pub const TEST_NETWORK: &str = "berth-e2e";

/// The gateway address of a Docker network: the host as its containers reach it
/// ([`TEST_NETWORK`], the tests' bridge, once a server has created it).
pub fn network_gateway(network: &str) -> String {
    let (ok, out, err) = docker(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", network]);
    assert!(ok && !out.is_empty(), "no gateway for network {network}: {err}");
    out
}

/// The `network` setting letting an instance reach `port` on the host through its
/// bridge's gateway (the default egress policy keeps instances off the host).
pub fn reach_host_port(port: u16) -> serde_json::Value {
    serde_json::json!({"egress": {"allow": [format!("{}/32:{port}", network_gateway(TEST_NETWORK))]}})
}

/// Removes every container, volume and built image (template builds) of an installation,
/// a few at a time. Images are left to a server's own purge otherwise, and a test server
/// that ends without purging its templates would leave hundreds of MB each run.
pub fn remove_install(install_id: &str) {
    if crate::kubernetes::enabled() {
        crate::kubernetes::remove_install(install_id);
    }
    let names = containers_with_label("berth.install", install_id);
    for chunk in names.chunks(8) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        docker(&args);
    }
    let vols = volumes_with_label("berth.install", install_id);
    for chunk in vols.chunks(8) {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        docker(&args);
    }
    let filter = format!("label=berth.install={install_id}");
    let (_, out, _) = docker(&["images", "-q", "--filter", &filter]);
    let mut images: Vec<&str> = out.lines().filter(|s| !s.is_empty()).collect();
    images.dedup();
    for chunk in images.chunks(8) {
        let mut args = vec!["rmi", "-f"];
        args.extend(chunk.iter().copied());
        docker(&args);
    }
}

/// Detaches the loop devices backed by home images under `data` (a server killed
/// before it could purge its instances leaves them attached).
pub fn release_loop_disks(data: &std::path::Path) {
    let Ok(out) = Command::new("losetup").args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"]).output()
    else {
        return;
    };
    let prefix = data.display().to_string();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((dev, file)) = line.trim().split_once(char::is_whitespace) {
            if file.trim().starts_with(&prefix) {
                let _ = Command::new("losetup").args(["--detach", dev]).status();
            }
        }
    }
}
