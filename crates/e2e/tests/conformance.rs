//! The hosting API against its own OpenAPI document: schemathesis (PyPI) drives a
//! real `berth server` from `/openapi.json` with every check it has (no 5xx,
//! documented statuses, content types and headers, response schemas, schema-valid
//! requests accepted, schema-violating ones refused, stateful sequences). Its
//! settings, with the reason for each, are in `conformance/schemathesis.toml`.
//!
//! Also: `/docs` is a real reference page built from the same document, served by
//! berth itself with nothing fetched from elsewhere.

use berth_test_util::{ServerOptions, TestServer};
use std::path::Path;
use std::process::Command;

/// The schemathesis CLI, or `None` (the test is then skipped, unless
/// BERTH_REQUIRE_SCHEMATHESIS is set, as in CI).
fn schemathesis() -> Option<&'static str> {
    if berth_test_util::require::on_path("schemathesis") {
        return Some("schemathesis");
    }
    berth_test_util::require::missing(
        "BERTH_REQUIRE_SCHEMATHESIS",
        "schemathesis",
        "pip install schemathesis",
        "the conformance run against the OpenAPI document",
    );
    None
}

#[tokio::test]
async fn the_api_conforms_to_its_openapi_document() {
    let Some(cli) = schemathesis() else { return };
    // Room for every instance schemathesis creates (sizes up to 8): the admission
    // refusal is documented and tested elsewhere, here it would hide create's paths.
    let s = TestServer::start_with(ServerOptions {
        extra_args: ["--memory-overcommit", "1000", "--key-rate", "0"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/schemathesis.toml");
    let report = tempfile::tempdir().unwrap();
    let base = s.base.clone();
    let key = s.admin_key.clone();
    let report_dir = report.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("900")
            .arg(cli)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args(["--max-examples", "15", "--workers", "1", "--seed", "1"])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report_dir)
            .env("NO_COLOR", "1")
            // It keeps a cache (`.schemathesis/`) in its working directory.
            .current_dir(&report_dir)
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> =
        stdout.lines().skip_while(|l| !l.contains("SUMMARY")).filter(|l| !l.trim().is_empty()).collect();
    eprintln!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found mismatches between the API and its document:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Tested: 22") || stdout.contains("Tested:"), "{stdout}");
    // Nothing was answered 5xx: the server log has no internal error either.
    assert!(!s.log().contains("store failure"), "{}", s.log());
}

#[tokio::test]
async fn docs_is_a_self_contained_reference() {
    let s = TestServer::start().await;
    let page = s.http().get(format!("{}/docs", s.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    // Every operation of the document is on the page, with its statuses and its
    // body's fields and constraints.
    let doc: serde_json::Value =
        s.http().get(format!("{}/openapi.json", s.base)).send().await.unwrap().json().await.unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let anchor = format!("{} {}", method.to_uppercase(), path);
            assert!(html.contains(&anchor), "{anchor} missing from /docs");
        }
    }
    for needle in ["429", "rate_limited", "Retry-After", "maxLength", "idle_timeout_secs", "expose", "1 … 100"] {
        assert!(html.contains(needle), "`{needle}` missing from /docs");
    }
    // Nothing is fetched from elsewhere: no external script, style or font.
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import", "url("] {
        let hits: Vec<&str> = html.match_indices(external).map(|(i, _)| &html[i..(i + 80).min(html.len())]).collect();
        assert!(hits.is_empty(), "/docs refers outside the server: {hits:?}");
    }
}
