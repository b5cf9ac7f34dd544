//! TLS: a wildcard certificate from files for both listeners (https:// URLs, ALPN
//! h2, reloaded when the files change), and certificates obtained on demand from
//! an ACME server (Debian's `pebble`, validating with TLS-ALPN-01 on the edge).

use berth_test_util::tls::TestCa;
use berth_test_util::{ServerOptions, TestServer};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTPS client trusting `root_pem` that sends `host` to the edge on loopback.
fn client_for(root_pem: &str, host: &str, edge_port: u16) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(host, format!("127.0.0.1:{edge_port}").parse().unwrap())
}

/// The certificate the edge presents for `sni` (DER), trusting `root_pem`.
async fn presented(root_pem: &str, sni: &str, port: u16) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_wildcard_certificate_serves_https_urls_and_is_reloaded() {
    let ca = TestCa::new("berth test CA");
    // A wildcard needs two labels under it (`*.localhost` would be refused by clients).
    let leaf = ca.leaf(&["*.berth.localhost", "localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--domain".into(),
            "berth.localhost".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        api_ca: Some(ca.pem()),
        ..Default::default()
    })
    .await;

    // The hosting API answers over https, and instance URLs are https://.
    let inst = s.create_instance(json!({"expose": [8080]})).await;
    let id = inst["id"].as_str().unwrap();
    let host = format!("{}.berth.localhost", &id[5..]);
    let port = s.edge_port();
    assert_eq!(inst["url"], format!("https://{host}:{port}"));
    assert!(inst["ports"][1]["url"].as_str().unwrap().starts_with("https://"));

    // A client trusting the CA reaches the agent; ALPN picks HTTP/2.
    let client = client_for(&ca.pem(), &host, port).build().unwrap();
    let r = client.get(format!("https://{host}:{port}/health")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = client_for(&ca.pem(), &host, port)
        .http1_only()
        .build()
        .unwrap()
        .get(format!("https://{host}:{port}/v1/models"))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err(), "no plain HTTP on a TLS port");
    // Share links under TLS set a Secure cookie.
    let (_, share) = s.post(&format!("/v1/instances/{id}/share"), json!({"ttl_secs": 60})).await;
    let url = share["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://{host}:{port}/?berth_share=")), "{url}");
    let r = client_for(&ca.pem(), &host, port)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["set-cookie"].to_str().unwrap().ends_with("; Secure"));

    // New files are picked up without a restart.
    assert_eq!(presented(&ca.pem(), &host, port).await, leaf.der);
    let renewed = ca.leaf(&["*.berth.localhost", "localhost", "127.0.0.1"]);
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while presented(&ca.pem(), &host, port).await != renewed.der {
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = client.get(format!("https://{host}:{port}/health")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out)).spawn().expect("spawns"))
}

#[tokio::test]
async fn certificates_are_obtained_on_demand_from_an_acme_server() {
    if !berth_test_util::require::on_path("pebble") || !berth_test_util::require::on_path("pebble-challtestsrv") {
        berth_test_util::require::missing(
            "BERTH_REQUIRE_PEBBLE",
            "pebble (with pebble-challtestsrv)",
            "apt-get install pebble",
            "the whole test (certificates from an ACME server)",
        );
        return;
    }
    // pebble's own HTTPS (its directory) is signed by a CA of ours, given to berth with --acme-ca.
    let ca = TestCa::new("pebble directory CA");
    let pebble_leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("pebble.pem"), &pebble_leaf.cert_pem).unwrap();
    std::fs::write(p("pebble.key"), &pebble_leaf.key_pem).unwrap();
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    let (acme_port, mgmt_port, dns_port, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());

    // DNS: pebble-challtestsrv answers 127.0.0.1 for every name.
    let _dns = spawn(
        Command::new("pebble-challtestsrv").args([
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{chall_mgmt}"),
            "-defaultIPv6",
            "",
        ]),
        &p("challtestsrv.log"),
    );

    // The berth server, whose edge pebble validates (TLS-ALPN-01 on the edge's port).
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--acme-directory".into(),
            format!("https://127.0.0.1:{acme_port}/dir"),
            "--acme-ca".into(),
            p("ca.pem").display().to_string(),
            "--acme-email".into(),
            "ops@example.com".into(),
        ],
        ..Default::default()
    })
    .await;
    let edge_port = s.edge_port();
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": p("pebble.pem"), "privateKey": p("pebble.key"),
        "httpPort": free_port(), "tlsPort": edge_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false,
    }});
    std::fs::write(p("pebble.json"), config.to_string()).unwrap();
    let _pebble = spawn(
        Command::new("pebble")
            .args(["-config", &p("pebble.json").display().to_string(), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0"),
        &p("pebble.log"),
    );
    let management = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let issuing_root = loop {
        if let Ok(r) = management.get(format!("https://127.0.0.1:{mgmt_port}/roots/0")).send().await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "pebble did not start: {}",
            std::fs::read_to_string(p("pebble.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let inst = s.create_instance(json!({})).await;
    let id = inst["id"].as_str().unwrap();
    let host = format!("{}.localhost", &id[5..]);
    assert_eq!(inst["url"], format!("https://{host}:{edge_port}"));
    // The first connection for the host waits while the certificate is issued.
    let client = client_for(&issuing_root, &host, edge_port).build().unwrap();
    let started = Instant::now();
    let r = client.get(format!("https://{host}:{edge_port}/health")).bearer_auth(&s.admin_key).send().await;
    let r = r.unwrap_or_else(|e| {
        panic!(
            "no certificate for {host}: {e}\npebble:\n{}\nserver:\n{}",
            std::fs::read_to_string(p("pebble.log")).unwrap_or_default(),
            s.log()
        )
    });
    assert_eq!(r.status(), 200);
    eprintln!("certificate obtained and first request answered in {:?}", started.elapsed());
    assert!(s.data_dir().join(format!("acme/certs/{host}.pem")).is_file(), "kept in the data dir");

    // A host that routes nowhere is never ordered: its handshake fails.
    let stranger = "zzzzzzzzzz.localhost";
    let r = client_for(&issuing_root, stranger, edge_port)
        .build()
        .unwrap()
        .get(format!("https://{stranger}:{edge_port}/health"))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(!s.data_dir().join(format!("acme/certs/{stranger}.pem")).exists());

    // After a restart the stored certificate is served at once.
    let mut s = s;
    s.restart().await;
    let r: Value = client
        .get(format!("https://{host}:{edge_port}/health"))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ok");
}
