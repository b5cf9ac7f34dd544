//! `berth server`: opens the store, connects the runtime, bootstraps, serves the
//! hosting API and runs the reconciler until SIGTERM.

use crate::acme::{Acme, AcmeConfig};
use crate::activity::Activity;
use crate::config::{RuntimeKind, ServerArgs};
use crate::edge::access_log::{AccessLog, AccessLogTarget};
use crate::edge::share::Shares;
use crate::edge::{Edge, EdgeConfig, EdgeRoutes, EdgeShared};
use crate::key_cache::KeyCache;
use crate::listen;
use crate::locks::InstanceLocks;
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::state::{AppState, Settings};
use crate::tls::{FileCert, TlsAcceptor};
use anyhow::{bail, Context};
use berth_runtime::docker::{DockerConfig, DockerRuntime};
use berth_runtime::Runtime;
use berth_runtime::RuntimeEventKind;
use berth_store::{Backend, Store};
use futures_util::StreamExt;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight requests get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The Kubernetes driver, as the flags say.
#[cfg(feature = "kubernetes")]
async fn kubernetes_runtime(args: &ServerArgs, install_id: &str) -> anyhow::Result<(Arc<dyn Runtime>, String)> {
    use berth_runtime::kubernetes::{spec::Setup, KubeConfig, KubeRuntime};
    // Refused rather than ignored: instances would run without the isolation asked for.
    if args.isolation == crate::config::Isolation::Gvisor {
        bail!(
            "--isolation gvisor is not available with --runtime kubernetes (a RuntimeClass for it is not \
             supported yet): leave --isolation at runc, or run instances on Docker"
        );
    }
    let agent_image = args.k8s_agent_image.clone().context(
        "--runtime kubernetes needs --k8s-agent-image: an image holding only /berth-agent \
         (scripts/build-agent-image.sh builds one), pullable by the cluster's nodes",
    )?;
    let base_image =
        args.base_image.clone().unwrap_or_else(|| berth_runtime::docker::DEFAULT_BASE_IMAGES[0].to_string());
    let setup = Setup {
        install_id: install_id.to_string(),
        base_image: base_image.clone(),
        agent_image,
        storage_class: args.k8s_storage_class.clone(),
        stop_grace_secs: 10,
        server_address: args.k8s_server_address,
        cpu_request_percent: args.k8s_cpu_request_percent,
        memory_request_percent: args.k8s_memory_request_percent,
    };
    let cfg = KubeConfig { kubeconfig: args.kubeconfig.clone(), namespace: args.namespace.clone(), setup };
    let kube = KubeRuntime::connect(cfg).await.context("connecting to Kubernetes")?;
    tracing::info!(%base_image, namespace = kube.namespace(), "system template image");
    Ok((Arc::new(kube), base_image))
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_runtime(_: &ServerArgs, _: &str) -> anyhow::Result<(Arc<dyn Runtime>, String)> {
    bail!("this berth was built without the kubernetes feature: build it with `--features kubernetes` (the default of berth-cli)")
}

/// Runs the server until SIGTERM or Ctrl-C; instances keep running afterwards.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::bootstrap::admin_key_env()?;
    // Refused before anything is written: an agent that cannot run in every image.
    let agent_bin = crate::agent_bin::choose(args.agent_bin.as_deref())?;
    // Every connection is a descriptor: take the hard limit, not the soft 1024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating data dir {}", args.data.display()))?;
    // The data dir holds the database (tenants' env values, keys' hashes) and the admin
    // key: the server's user only, also when it already existed with looser modes.
    make_private(&args.data, 0o700).with_context(|| format!("restricting {}", args.data.display()))?;
    let seal = crate::bootstrap::secret_key(&args.data)?;
    let pool_opts = berth_store::PoolOptions {
        max_connections: args.database_max_connections.max(2),
        acquire_timeout: Duration::from_secs(args.database_timeout_secs.max(1)),
    };
    let db = crate::db::open(args.database_url.as_deref(), &args.data, &pool_opts).await?;
    let db = db.sealed_with(seal.clone()).await.context("sealing env values")?;
    let replicas = db.backend() == Backend::Postgres;
    let store: Arc<dyn Store> = Arc::new(db.clone());
    for name in ["berth.db", "berth.db-wal", "berth.db-shm", "admin.key", crate::bootstrap::SECRET_KEY_FILE] {
        let path = args.data.join(name);
        if path.exists() {
            make_private(&path, 0o600).with_context(|| format!("restricting {}", path.display()))?;
        }
    }
    // The installation id scopes this server's containers (label `berth.install`);
    // BERTH_INSTALL_ID names it on first start (tests use it to clean up after themselves).
    let proposed = std::env::var("BERTH_INSTALL_ID")
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or_else(|| berth_core::ids::random_label(12));
    let install_id = store.meta_init("install_id", &proposed).await?;

    let (runtime, base_image): (Arc<dyn Runtime>, String) = match args.runtime {
        RuntimeKind::Docker => {
            let cfg = DockerConfig {
                base_image: args.base_image.clone(),
                agent_bin: agent_bin.clone(),
                install_id: install_id.clone(),
                network: args.network.clone(),
                max_concurrent_calls: args.runtime_concurrency,
                stop_grace_secs: 10,
                disk_dir: disk_dir(&args)?,
                oci_runtime: (args.isolation == crate::config::Isolation::Gvisor).then(|| args.gvisor_runtime.clone()),
                ca_bundle: ca_bundle(args.ca_bundle.as_deref())?,
                tune_host: !args.no_host_tuning,
            };
            let docker = DockerRuntime::connect(cfg).await.context("connecting to Docker")?;
            let base_image = docker.base_image().to_string();
            tracing::info!(%base_image, "system template image");
            (Arc::new(docker), base_image)
        }
        RuntimeKind::Kubernetes => kubernetes_runtime(&args, &install_id).await?,
    };
    runtime.prepare().await.context("preparing the runtime")?;
    // The managed LLM proxy listens on the host's address on the instances' network only.
    let llm_cfg = crate::llm::LlmConfig::from_args(&args)?;
    let llm_listener = match &llm_cfg {
        Some(_) => {
            let ip = runtime.host_address().context(
                "the managed LLM proxy (--llm-base-url/--llm-upstream) needs the host's address on the instances' \
                 network, and the runtime has none",
            )?;
            let addr = std::net::SocketAddr::new(ip, args.llm_proxy_port);
            Some(listen::bind(addr).with_context(|| format!("binding the managed LLM proxy on {addr}"))?)
        }
        None => None,
    };
    let llm_addr = llm_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let served: Vec<u16> = llm_addr.iter().map(|a| a.port()).collect();
    let egress = egress_firewall(&args, runtime.as_ref(), store.as_ref(), &install_id, served).await?;
    {
        // Replicas starting together on an empty database make one default workspace.
        let _first = berth_store::coord::SharedLocks::new(db.clone()).lock("bootstrap").await?;
        crate::bootstrap::ensure_default_workspace(store.as_ref(), &args.data, args.instance_limit).await?;
    }
    if args.billing && llm_cfg.is_none() {
        tracing::warn!("--billing without a managed LLM upstream: only compute (--size-price) is charged");
    }
    let compute = crate::compute::Compute::from_args(&args)?;
    let webhooks = Arc::new(webhooks(&args, &seal)?);
    let llm_proxy = match llm_cfg {
        Some(cfg) => Some(Arc::new(crate::llm::LlmProxy::new(cfg, store.clone(), seal.clone(), webhooks.clone())?)),
        None => None,
    };

    let activity = Arc::new(Activity::default());
    let routes = Arc::new(EdgeRoutes::new(activity.clone()));
    for rec in store.all_instances().await? {
        routes.apply(&rec);
    }
    let secret = store.meta_init("share_secret", &berth_core::ids::random_label(64)).await?;
    let shares = Arc::new(Shares::new(secret.into_bytes()));
    for s in store.all_active_shares(berth_core::now_secs()).await? {
        shares.add(&s);
    }
    let (api_tls, tls) = tls_acceptors(&args, &routes)?;
    let capacity = runtime.capacity();
    // No build runs in a server that starts: one cut short by a stop ends `failed`.
    // With replicas, another may be building: only builds older than any build may
    // run are cut (their replica stopped).
    let before = match replicas {
        true => berth_core::now_secs() - args.build_timeout_secs as i64 - 60,
        false => i64::MAX,
    };
    let cut = store.fail_unfinished_builds(before, "the server stopped during the build; build again").await?;
    if cut > 0 {
        tracing::warn!(builds = cut, "template builds cut short by a server stop are marked failed");
    }
    let catalog = Arc::new(crate::templates::Catalog::load(store.as_ref()).await?);
    let pool = warm_pool(&args, &agent_bin)?;
    let agents = Arc::new(crate::agents::SystemAgents::new(&args.agent_templates, args.agent_template_base.clone())?);
    let state = AppState {
        keys: Arc::new(KeyCache::new(store.clone())),
        store,
        seal,
        runtime,
        locks: Arc::new(if replicas { InstanceLocks::shared(db.clone()) } else { InstanceLocks::default() }),
        leader: crate::db::Leader::elect(db.clone()),
        metrics: Arc::new(Metrics::default()),
        settings: Arc::new(Settings {
            database: db.backend(),
            domain: args.domain.clone(),
            edge_port: args.edge_listen.port(),
            instance_limit: args.instance_limit,
            retention_secs: args.retention_secs,
            workspace_disk_gb: args.workspace_disk_gb,
            start_timeout: Duration::from_secs(args.start_timeout_secs),
            base_image,
            tls: tls.is_some(),
            min_idle_timeout_secs: args.min_idle_timeout_secs,
            host_cpus: capacity.cpus,
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            templates: catalog,
            resource_bounds: crate::instances::validate::ResourceBounds::from_args(&args)?,
        }),
        // Agents' health, claims and webhooks. Idle connections close after a few
        // seconds: a probe every 30 s per agent must not keep a thousand of them open.
        http: reqwest::Client::builder().no_proxy().pool_idle_timeout(Duration::from_secs(5)).build()?,
        egress: egress.clone(),
        heartbeats: Arc::default(),
        pool: pool.clone(),
        compute: Arc::new(compute),
        webhooks,
        llm: llm_addr
            .zip(llm_proxy.as_ref())
            .map(|(a, p)| Arc::new(crate::llm::ManagedLlm::new(a, &p.cfg, args.llm_model.clone()))),
        llm_proxy: llm_proxy.clone(),
        routes,
        activity,
        shares,
        quotas: Arc::new(crate::quotas::Quotas::new(args.quota_limits())),
        disk_usage: Arc::default(),
        health_inspect: Arc::default(),
        exec_buffer: Arc::new(tokio::sync::Semaphore::new((args.exec_buffer_mb.max(1) * 1024) as usize)),
        stdin_turns: Arc::default(),
        builds: Arc::new(crate::builds::Builds::new(
            args.max_builds as usize,
            Duration::from_secs(args.build_timeout_secs),
        )),
        admission: Arc::new(crate::admission::Admission::new(
            capacity.memory_bytes,
            args.memory_overcommit,
            args.max_instances,
        )),
        agents: agents.clone(),
    };
    agents.start(state.runtime.clone());
    if let Some(changes) = db.changes().await.context("listening for other replicas' changes")? {
        tokio::spawn(crate::db::follow_changes(state.clone(), changes));
    }
    let reconciler = Reconciler::new(state.clone(), Duration::from_millis(args.reconcile_interval_ms.max(100)));
    let nudge = reconciler.nudge();
    tokio::spawn(reconciler.run());
    if let Some(pool) = pool {
        tokio::spawn(crate::pool::run(state.clone(), pool));
    }
    tokio::spawn(flush_activity(state.clone()));
    tokio::spawn(follow_runtime_events(state.clone(), nudge));
    let renew_every = Duration::from_millis(args.reconcile_interval_ms.clamp(100, 5000));
    tokio::spawn(crate::compute::renew_loop(state.clone(), renew_every));
    // Keys whose time is up stop working, and what they opened closes, within 0.5 s.
    let keys = state.keys.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            keys.expire_due();
        }
    });

    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = listen::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, install = %install_id, "berth server listening");
    let api_scheme = if api_tls.is_some() { "https" } else { "http" };
    println!("berth server listening on {api_scheme}://{}", listener.local_addr()?);
    let edge_listener =
        listen::bind(args.edge_listen).with_context(|| format!("binding the edge on {}", args.edge_listen))?;
    println!(
        "berth edge listening on {scheme}://{} (instance URLs: {scheme}://{{label}}.{}:{})",
        edge_listener.local_addr()?,
        args.domain,
        args.edge_listen.port()
    );
    let access = AccessLog::open(&args.access_log.parse().unwrap_or(AccessLogTarget::Stderr))
        .with_context(|| format!("opening the access log {}", args.access_log))?;
    let shared = EdgeShared::new(
        state.clone(),
        access,
        EdgeConfig { body_limit: args.edge_body_limit_mb * 1024 * 1024 },
        tokio::runtime::Handle::current(),
    );
    let threads = args.edge_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let makes: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let edge = Edge::new(&shared);
            move |peer| edge.service(peer)
        })
        .collect();
    let limits = args.conn_limits();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let edge_serving = tokio::spawn(listen::serve_on_threads(
        edge_listener,
        tls.clone(),
        limits,
        makes,
        stop_rx.clone(),
        SHUTDOWN_GRACE,
    ));
    let llm_serving = match (llm_listener, llm_proxy) {
        (Some(listener), Some(proxy)) => {
            println!("berth managed LLM proxy listening on http://{} (instances only)", listener.local_addr()?);
            let router = crate::llm::proxy::router(proxy);
            // Only from the instances' network (or the host): a packet routed to the
            // gateway address from elsewhere (the LAN) finds the port, but not the proxy.
            let subnets: Vec<berth_core::egress::Cidr> =
                state.runtime.host_subnets().iter().filter_map(|s| s.parse().ok()).collect();
            let refuse = crate::llm::proxy::outsiders();
            Some(tokio::spawn(listen::serve(
                listener,
                None,
                limits,
                move |peer: listen::Peer| {
                    let app = if crate::llm::caller_allowed(peer.addr.ip(), &subnets) {
                        router.clone()
                    } else {
                        refuse.clone()
                    };
                    listen::Boxed(TowerToHyperService::new(app))
                },
                stop_rx.clone(),
                SHUTDOWN_GRACE,
            )))
        }
        _ => None,
    };
    let api = crate::routes::router(state);
    let api_serving = tokio::spawn(listen::serve(
        listener,
        api_tls,
        limits,
        move |peer: listen::Peer| {
            // Each request learns its client's address (failed authentications are
            // counted by address).
            let client = crate::auth::ClientAddr(peer.addr.ip());
            let api = tower::ServiceExt::map_request(api.clone(), move |mut req: http::Request<_>| {
                req.extensions_mut().insert(client);
                req
            });
            listen::Boxed(TowerToHyperService::new(api))
        },
        stop_rx,
        SHUTDOWN_GRACE,
    ));
    shutdown_signal().await;
    // Stop accepting and let in-flight requests finish; followers of endless streams
    // (logs?follow, SSE) get a bounded grace period rather than holding the exit forever.
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(api_serving, edge_serving);
    if let Some(llm) = llm_serving {
        let _ = llm.await;
    }
    shared.access.close();
    tracing::info!("berth server stopped; instances keep running");
    Ok(())
}

/// Installs the instances' egress rules (berth's own ports, the default policy and
/// the operator's `--egress-allow`/`--egress-deny`); the server does not start without
/// them. The reconciler re-asserts them every pass.
async fn egress_firewall(
    args: &ServerArgs,
    runtime: &dyn Runtime,
    store: &dyn Store,
    install_id: &str,
    served_ports: Vec<u16>,
) -> anyhow::Result<Option<Arc<crate::firewall::Firewall>>> {
    let Some(interface) = runtime.host_interface() else {
        tracing::warn!("the runtime has no host interface to firewall; instances' egress is not restricted");
        return Ok(None);
    };
    let read =
        |path: &str| std::fs::read_to_string(path).map(|t| crate::firewall::parse_resolvers(&t)).unwrap_or_default();
    let mut resolvers = read("/etc/resolv.conf");
    if resolvers.iter().any(|r| r.is_loopback()) {
        // systemd-resolved's stub: Docker forwards to the upstream servers it lists instead.
        resolvers.extend(read("/run/systemd/resolve/resolv.conf"));
    }
    if resolvers.is_empty() {
        tracing::warn!("no nameserver in /etc/resolv.conf: instances may not resolve names");
    }
    let subnets = runtime.host_subnets().iter().filter_map(|s| s.parse().ok()).collect();
    let mut berth_ports = vec![args.listen.port(), args.edge_listen.port()];
    berth_ports.dedup();
    let fw = crate::firewall::Firewall::new(crate::firewall::EgressConfig {
        interface: interface.clone(),
        install: install_id.to_string(),
        subnets,
        resolvers,
        allow: args.egress_allow.clone(),
        deny: args.egress_deny.clone(),
        berth_ports,
        served_ports,
    });
    // Every instance's policy is known before the first sync (which removes the rules of
    // instances it does not know); their addresses come with the reconciler's first pass.
    for rec in store.all_instances().await? {
        if rec.status != berth_core::Status::Deleted {
            fw.set_policy(&rec.id, &rec.egress);
        }
    }
    fw.sync().with_context(|| {
        format!(
            "installing the instances' egress rules on {interface} (iptables, as root): without them instances reach \
             the host, the LAN and cloud metadata"
        )
    })?;
    tracing::info!(interface, chain = %fw.egress_chain(), "instances' egress policy installed");
    Ok(Some(Arc::new(fw)))
}

/// The webhook sender; without `--webhook-secret` the derived secret is written to the
/// data dir (0600) for the operator's receiver.
fn webhooks(args: &ServerArgs, seal: &berth_store::seal::SealKey) -> anyhow::Result<crate::webhook::Webhooks> {
    let secret = match &args.webhook_secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            let secret = seal.webhook_secret();
            if args.webhook_url.is_some() {
                let path = args.data.join("webhook.secret");
                std::fs::write(&path, format!("{secret}\n")).with_context(|| format!("writing {}", path.display()))?;
                make_private(&path, 0o600)?;
            }
            secret
        }
    };
    if let Some(url) = &args.webhook_url {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--webhook-url `{url}` is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--webhook-url `{url}`: only http and https");
        }
    }
    crate::webhook::Webhooks::new(args.webhook_url.clone(), secret, args.low_balance_micros)
}

type Acceptors = (Option<Arc<TlsAcceptor>>, Option<Arc<TlsAcceptor>>);

/// TLS of the hosting API (the certificate files) and of the edge (the files and,
/// for instance hosts they do not cover, ACME).
fn tls_acceptors(args: &ServerArgs, routes: &Arc<EdgeRoutes>) -> anyhow::Result<Acceptors> {
    let file = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let f = FileCert::load(cert.clone(), key.clone())?;
            f.watch(Duration::from_secs(2));
            Some(f)
        }
        _ => None,
    };
    let acme = match &args.acme_directory {
        Some(directory) => {
            let acme = Acme::new(
                AcmeConfig {
                    directory: directory.clone(),
                    email: args.acme_email.clone(),
                    ca: args.acme_ca.clone(),
                    domain: args.domain.clone(),
                    dir: args.data.join("acme"),
                },
                routes.clone(),
            )?;
            acme.renew_periodically();
            Some(acme)
        }
        None => None,
    };
    let api = file.clone().map(|f| TlsAcceptor::new(Some(f), None));
    let edge = (file.is_some() || acme.is_some()).then(|| TlsAcceptor::new(file, acme));
    Ok((api, edge))
}

/// Writes the edge's request times and counts to the database once a second.
async fn flush_activity(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let replicas = state.settings.database == Backend::Postgres;
        if let Err(e) = state.activity.flush(state.store.as_ref(), replicas).await {
            tracing::warn!(error = %e, "could not record edge traffic");
        }
    }
}

/// Keeps the edge off containers that died, paused or vanished, as soon as the
/// runtime says so, and tells the reconciler, which brings them back at once.
async fn follow_runtime_events(state: AppState, nudge: Arc<crate::reconciler::Nudge>) {
    loop {
        match state.runtime.events().await {
            Ok(mut events) => {
                // Whatever happened while nobody listened is seen by a listing.
                nudge.changed(true);
                while let Some(ev) = events.next().await {
                    let Ok(ev) = ev else { break };
                    let Some(id) = berth_core::InstanceId::parse(&ev.instance_id) else { continue };
                    // What the reconciler last listed of it is stale now.
                    state.locks.touch(&id);
                    nudge.changed(ev.kind != RuntimeEventKind::Started);
                    if matches!(
                        ev.kind,
                        RuntimeEventKind::Died | RuntimeEventKind::Paused | RuntimeEventKind::Destroyed
                    ) {
                        state.routes.set_address(&id, None, None);
                        if ev.kind != RuntimeEventKind::Paused && state.egress.is_some() {
                            // Its address is free for another container: its own rules go,
                            // unless a new container of the instance runs already.
                            if let Ok(cs) = state.runtime.inspect(&id).await {
                                let addrs = match cs.observed {
                                    berth_runtime::Observed::Running | berth_runtime::Observed::Paused => {
                                        cs.addresses()
                                    }
                                    _ => Vec::new(),
                                };
                                state.egress_addresses(&id, addrs).await;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "runtime events unavailable"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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

/// Sets `path`'s mode (a directory 0700, a file 0600) when it is looser.
fn make_private(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The system's CA bundle, the default of `--ca-bundle`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA bundle builds and instances trust, per `--ca-bundle` (`None`: the images' own).
fn ca_bundle(flag: Option<&str>) -> anyhow::Result<Option<std::path::PathBuf>> {
    let path = match flag {
        Some("none") => return Ok(None),
        Some(p) => std::path::PathBuf::from(p),
        None if std::path::Path::new(SYSTEM_CA_BUNDLE).is_file() => SYSTEM_CA_BUNDLE.into(),
        None => return Ok(None),
    };
    let text = std::fs::read(&path).with_context(|| format!("reading --ca-bundle {}", path.display()))?;
    if !text.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        bail!("--ca-bundle {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
    }
    // Absolute: it is bind-mounted by the Docker daemon, which has a working directory of its own.
    Ok(Some(std::fs::canonicalize(&path)?))
}

/// Where loop-backed home images go, per `--disk-quota` (`None`: plain volumes).
fn disk_dir(args: &ServerArgs) -> anyhow::Result<Option<std::path::PathBuf>> {
    use crate::config::DiskQuota;
    if args.disk_quota == DiskQuota::Off {
        return Ok(None);
    }
    match loop_disks_unavailable() {
        None => Ok(Some(args.disk_dir.clone().unwrap_or_else(|| args.data.join("disks")))),
        Some(why) if args.disk_quota == DiskQuota::Loop => bail!("--disk-quota loop: {why}"),
        Some(why) => {
            tracing::warn!(
                "home volumes are not bounded to their size: {why} (--disk-quota off says this is intended)"
            );
            Ok(None)
        }
    }
}

/// Why this host cannot give instances loop-backed homes, if it cannot.
fn loop_disks_unavailable() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !berth_runtime::docker::docker_is_local() {
        return Some("Docker is not on this host (DOCKER_HOST), so its loop devices are not ours to attach".into());
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        return Some("attaching loop devices needs root".into());
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Some("this host has no loop devices (/dev/loop-control)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = berth_runtime::docker::disk::TOOLS
        .iter()
        .copied()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if !missing.is_empty() {
        return Some(format!("{} not found on PATH (Debian: util-linux, e2fsprogs)", missing.join(", ")));
    }
    None
}

/// The warm pool of the `--warm-pool` entries (`None`: none). Its instances are told
/// apart by the agent binary they run: its size and modification time.
fn warm_pool(args: &ServerArgs, agent_bin: &std::path::Path) -> anyhow::Result<Option<Arc<crate::pool::WarmPool>>> {
    let specs = args
        .warm_pool
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| crate::pool::PoolSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if specs.is_empty() {
        return Ok(None);
    }
    let meta = std::fs::metadata(agent_bin).with_context(|| format!("reading {}", agent_bin.display()))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let agent = format!("{}-{}", meta.len(), mtime.as_nanos());
    Ok(Some(Arc::new(crate::pool::WarmPool::new(specs, agent, args.warm_pool_parallel))))
}
