//! `berth server`: opens the store, connects the runtime, bootstraps, serves the
//! hosting API and runs the reconciler until SIGTERM.

use crate::config::{RuntimeKind, ServerArgs};
use crate::locks::InstanceLocks;
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::state::{AppState, Settings};
use anyhow::{bail, Context};
use berth_runtime::docker::{DockerConfig, DockerRuntime};
use berth_runtime::Runtime;
use berth_store::{SqliteStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight requests get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the server until SIGTERM or Ctrl-C; instances keep running afterwards.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating data dir {}", args.data.display()))?;
    let store: Arc<dyn Store> = match args.database_url.as_deref() {
        None => Arc::new(SqliteStore::open(&args.data.join("berth.db")).await.context("opening the SQLite database")?),
        Some(url) if url.starts_with("sqlite:") => {
            Arc::new(SqliteStore::open_url(url).await.context("opening the database")?)
        }
        Some(url) => bail!("unsupported --database-url `{url}`: this build stores state in SQLite (sqlite:PATH)"),
    };
    // The installation id scopes this server's containers (label `berth.install`);
    // BERTH_INSTALL_ID names it on first start (tests use it to clean up after themselves).
    let proposed = std::env::var("BERTH_INSTALL_ID")
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or_else(|| berth_core::ids::random_label(12));
    let install_id = store.meta_init("install_id", &proposed).await?;

    let runtime: Arc<dyn Runtime> = match args.runtime {
        RuntimeKind::Docker => {
            let cfg = DockerConfig {
                base_image: args.base_image.clone(),
                agent_bin: args.agent_bin_path(),
                install_id: install_id.clone(),
                network: args.network.clone(),
                max_concurrent_calls: args.runtime_concurrency,
                stop_grace_secs: 10,
            };
            Arc::new(DockerRuntime::connect(cfg).await.context("connecting to Docker")?)
        }
        RuntimeKind::Kubernetes => bail!("the kubernetes runtime is not available in this build; use --runtime docker"),
    };
    runtime.prepare().await.context("preparing the runtime")?;
    let exposed = crate::firewall::exposed_ports(&[args.listen, args.edge_listen]);
    let shielded = match runtime.host_interface() {
        Some(interface) if !exposed.is_empty() => {
            crate::firewall::shield(&interface, &exposed)?;
            Some(interface)
        }
        None if !exposed.is_empty() => {
            tracing::warn!(
                "the runtime has no host interface to firewall; make sure instances cannot reach {exposed:?}"
            );
            None
        }
        _ => None,
    };
    crate::bootstrap::ensure_default_workspace(store.as_ref(), &args.data, args.instance_limit).await?;
    if args.llm_base_url.is_some() || args.billing {
        tracing::warn!(
            "the managed LLM proxy and billing are not part of this build; --llm-* and --billing are ignored"
        );
    }

    let state = AppState {
        store,
        runtime,
        locks: Arc::new(InstanceLocks::default()),
        metrics: Arc::new(Metrics::default()),
        settings: Arc::new(Settings {
            domain: args.domain.clone(),
            edge_port: args.edge_listen.port(),
            instance_limit: args.instance_limit,
            retention_secs: args.retention_secs,
            start_timeout: Duration::from_secs(args.start_timeout_secs),
            base_image: args.base_image.clone(),
        }),
        http: reqwest::Client::builder().no_proxy().build()?,
        heartbeats: Arc::default(),
        edge_http: reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5)).build()?,
    };
    let reconciler = Reconciler::new(state.clone());
    tokio::spawn(reconciler.run(Duration::from_millis(args.reconcile_interval_ms.max(100))));

    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, install = %install_id, "berth server listening");
    println!("berth server listening on http://{}", listener.local_addr()?);
    let edge_listener = tokio::net::TcpListener::bind(args.edge_listen)
        .await
        .with_context(|| format!("binding the edge on {}", args.edge_listen))?;
    println!(
        "berth edge listening on http://{} (instance URLs: http://{{label}}.{}:{})",
        edge_listener.local_addr()?,
        args.domain,
        args.edge_listen.port()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let edge_stop = stop_rx.clone();
    let edge = axum::serve(edge_listener, crate::edge::router(state.clone())).with_graceful_shutdown(async move {
        let mut rx = edge_stop;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    tokio::spawn(async move {
        if let Err(e) = edge.await {
            tracing::error!(error = %e, "edge stopped");
        }
    });
    let server = axum::serve(listener, crate::routes::router(state)).with_graceful_shutdown(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    let mut serving = tokio::spawn(async move { server.await });
    tokio::select! {
        res = &mut serving => { res??; return Ok(()); }
        _ = shutdown_signal() => {}
    }
    // Stop accepting and let in-flight requests finish; followers of endless streams
    // (logs?follow) get a bounded grace period rather than holding the exit forever.
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
        Ok(res) => res??,
        Err(_) => tracing::warn!("requests still open after {} s; exiting anyway", SHUTDOWN_GRACE.as_secs()),
    }
    if let Some(interface) = shielded {
        crate::firewall::unshield(&interface, &exposed);
    }
    tracing::info!("berth server stopped; instances keep running");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
