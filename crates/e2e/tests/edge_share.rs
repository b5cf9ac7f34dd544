//! Share links: a page on an exposed port, opened in headless Chromium through a
//! share link, loads a sub-resource and opens a WebSocket with the cookie the link
//! set; after revocation or expiry the same browser gets 401. A share never
//! grants the hosting API, and the instance never sees the share's token.

use berth_test_util::app::{host_of, port_url};
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's Chromium, or `None`: then the browser part is skipped with a loud
/// SKIPPED line, or the test fails when BERTH_REQUIRE_CHROMIUM is set (as in CI).
fn chromium() -> Option<String> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        berth_test_util::require::missing(
            "BERTH_REQUIRE_CHROMIUM",
            "chromium",
            "apt-get install chromium",
            "the browser part (share links opened in headless Chromium)",
        );
    }
    found.map(str::to_string)
}

/// Opens `url` in headless Chromium with `profile` and answers the DOM at the
/// page's load event.
fn browse(chromium: &str, profile: &Path, url: &str) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn wait_for_log(s: &TestServer, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = s.app_log(id).await;
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "`{needle}` never showed in the app's log:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn share_links_open_pages_with_websockets_in_a_browser_until_revoked() {
    let s = TestServer::start_with(ServerOptions { base_image: None, ..Default::default() }).await;
    let inst = s.create_instance(json!({"expose": [8080]})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let app_url = port_url(&inst, 8080);
    let host = host_of(&app_url);
    s.start_app(&id, 8080, &host).await;

    // A port the instance does not route is not found; bad requests name the field.
    let (st, bad) = s.post(&format!("/v1/instances/{id}/share"), json!({"port": 5000})).await;
    assert_eq!((st, bad["error"]["code"].as_str()), (404, Some("port_not_found")), "{bad}");
    let (st, bad) = s.post(&format!("/v1/instances/{id}/share"), json!({"ttl_secs": 0})).await;
    assert_eq!((st, bad["error"]["details"]["field"].as_str()), (400, Some("ttl_secs")), "{bad}");

    let (st, share) = s.post(&format!("/v1/instances/{id}/share"), json!({"port": 8080, "ttl_secs": 600})).await;
    assert_eq!(st, 201, "{share}");
    let url = share["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{app_url}/?berth_share=")), "{url}");
    let token = url.split("berth_share=").nth(1).unwrap().to_string();
    let share_id = share["id"].as_str().unwrap().to_string();

    // The link trades its token for a host-only cookie and sends the browser to the clean URL.
    let no_redirects =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects
        .get(format!("{}/page.html?berth_share={token}&x=1", s.edge_base))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/page.html?x=1");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with(&format!("berth_share={token};")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Domain="), "{cookie}");
    // The cookie opens this port only; the token is no key for the hosting API.
    let with_cookie =
        |h: &str, path: &str| s.edge(Method::GET, h, path).header("cookie", format!("berth_share={token}"));
    assert_eq!(with_cookie(&host, "/sub.txt").send().await.unwrap().status(), 200);
    let agent_host = host_of(inst["url"].as_str().unwrap());
    assert_eq!(with_cookie(&agent_host, "/v1/models").send().await.unwrap().status(), 401);
    let (st, _) = s.call(Method::GET, "/v1/instances", Some(&token), None).await;
    assert_eq!(st, 401);
    let (st, _) = s.call(Method::GET, &format!("/v1/instances/{id}"), Some(&token), None).await;
    assert_eq!(st, 401);

    if let Some(chromium) = chromium() {
        let profile = tempfile::tempdir().unwrap();
        let browser_url = url.replace("/?berth_share", "/page.html?berth_share");
        // The page reports what its fetch and its WebSocket got back to the app; its
        // load event (when the browser dumps the DOM) waits for that report.
        let dom = browse(&chromium, profile.path(), &browser_url);
        let log = wait_for_log(&s, &id, "RESULT ").await;
        assert!(
            log.contains("RESULT sub=sub-ok&ws=echo%3Aping"),
            "the page's fetch and WebSocket worked:\n{log}\n{dom}"
        );
        assert!(!log.contains("berth_share"), "the instance never sees the share token:\n{log}");

        // Revoked: the same browser, with its cookie, is refused.
        let (st, _) =
            s.call(Method::DELETE, &format!("/v1/instances/{id}/shares/{share_id}"), Some(&s.admin_key), None).await;
        assert_eq!(st, 200);
        let dom = browse(&chromium, profile.path(), &format!("{app_url}/page.html"));
        assert!(dom.contains("share_invalid"), "401 after revocation: {dom}");
    } else {
        let (st, _) =
            s.call(Method::DELETE, &format!("/v1/instances/{id}/shares/{share_id}"), Some(&s.admin_key), None).await;
        assert_eq!(st, 200);
    }
    let r = with_cookie(&host, "/sub.txt").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "share_invalid");
    let (_, list) = s.get(&format!("/v1/instances/{id}/shares")).await;
    assert_eq!(list["data"], json!([]), "a revoked share is not listed");

    // Expiry: a two-second link works, then does not.
    let (_, short) = s.post(&format!("/v1/instances/{id}/share"), json!({"port": 8080, "ttl_secs": 2})).await;
    let token = short["url"].as_str().unwrap().split("berth_share=").nth(1).unwrap().to_string();
    let (_, list) = s.get(&format!("/v1/instances/{id}/shares")).await;
    assert_eq!(list["data"][0]["id"], short["id"]);
    assert!(list["data"][0].get("url").is_none(), "the token is shown once, at creation");
    let r =
        s.edge(Method::GET, &host, "/sub.txt").header("cookie", format!("berth_share={token}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r =
        s.edge(Method::GET, &host, "/sub.txt").header("cookie", format!("berth_share={token}")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A default-port share reaches the agent; deleting the instance ends its shares.
    let (_, agent_share) = s.post(&format!("/v1/instances/{id}/share"), json!({})).await;
    assert_eq!(agent_share["port"], 3737);
    let token = agent_share["url"].as_str().unwrap().split("berth_share=").nth(1).unwrap().to_string();
    let r = s
        .edge(Method::GET, &agent_host, "/v1/models")
        .header("cookie", format!("berth_share={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{id}"), Some(&s.admin_key), None).await;
    assert_eq!(st, 200);
    let r = s
        .edge(Method::GET, &agent_host, "/v1/models")
        .header("cookie", format!("berth_share={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
