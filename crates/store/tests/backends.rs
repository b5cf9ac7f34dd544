//! The store on both of its backends — a real SQLite file and a real PostgreSQL
//! database (a fresh one per test, on the cluster the test harness started): the
//! atomic limit-checked insert, cursor pages, keys, traffic batches, admission counts,
//! share links, sealed env, templates and builds, and export → import between them.

use berth_core::{InstanceId, KeyId, ShareId, Status, WorkspaceId};
use berth_store::{
    ExposedPort, InstanceFilter, InstanceRecord, KeyRecord, PoolOptions, ShareRecord, SqlStore, Store, StoreError,
    TrafficUpdate, WorkspaceRecord,
};

/// A database of one backend for one test: a SQLite file in a temporary directory, or
/// a fresh PostgreSQL database.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { url: format!("sqlite://{}", dir.path().join("berth.db").display()), _dir: Some(dir) }
    }

    fn postgres() -> Self {
        Self { url: berth_test_util::postgres::database_url(), _dir: None }
    }

    /// The store, migrated (each call a new pool, like a server start).
    async fn open(&self) -> SqlStore {
        SqlStore::connect(&self.url, &PoolOptions::default()).await.unwrap()
    }

    /// `sql` on the raw database, rows of two text columns.
    async fn raw(&self, sql: &str) -> Vec<(String, Option<String>)> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
    }
}

/// Each case runs once per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                super::$case(super::Db::sqlite()).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$case(super::Db::postgres()).await
            }
        }
    )*};
}

async fn workspace(s: &SqlStore) -> WorkspaceId {
    let ws = WorkspaceRecord { id: WorkspaceId::generate(), name: "w".into(), instance_limit: 2, created_at: 1 };
    s.create_workspace(&ws).await.unwrap();
    ws.id
}

fn instance(ws: &WorkspaceId, size: u32, status: Status) -> InstanceRecord {
    InstanceRecord {
        seq: 0,
        id: InstanceId::generate(),
        workspace_id: ws.clone(),
        name: None,
        template: "berth-agent".into(),
        template_version: 1,
        template_spec: None,
        resources: None,
        size,
        user: Some("u1".into()),
        region: "local".into(),
        metadata: Default::default(),
        env: [("K".to_string(), "v".to_string())].into(),
        budget_cap_micros: None,
        budget_models: None,
        managed_used_micros: 0,
        topup_micros: 0,
        lifecycle_mode: "always_on".into(),
        idle_timeout_secs: None,
        status,
        status_reason: None,
        restart_count: 0,
        created_at: 1,
        updated_at: 1,
        deleted_at: None,
        gateway_token: Some("tok".into()),
        last_request_at: None,
        exposed: vec![ExposedPort { port: 8080, handle: "h".repeat(20) }],
        idle_stopped: false,
        hold_until: None,
        requests_total: 0,
        egress: Default::default(),
        paid_until: None,
        pooled: false,
    }
}

async fn inserts_respect_the_limit_and_records_round_trip(db: Db) {
    let s = db.open().await;
    let ws = workspace(&s).await;
    let a = instance(&ws, 1, Status::Running);
    s.insert_instance(&a, 2).await.unwrap();
    s.insert_instance(&instance(&ws, 2, Status::Stopped), 2).await.unwrap();
    let err = s.insert_instance(&instance(&ws, 1, Status::Creating), 2).await.unwrap_err();
    assert!(matches!(err, StoreError::LimitExceeded { limit: 2 }), "{err}");

    let mut got = s.instance(Some(&ws), &a.id).await.unwrap().unwrap();
    assert_eq!(
        (got.exposed.clone(), got.env.clone(), got.gateway_token.clone()),
        (a.exposed.clone(), a.env.clone(), a.gateway_token.clone())
    );
    assert!(s.instance(Some(&WorkspaceId::generate()), &a.id).await.unwrap().is_none(), "scoped to its workspace");
    got.idle_stopped = true;
    got.hold_until = Some(99);
    got.status = Status::Stopped;
    s.update_instance(&got).await.unwrap();
    let again = s.instance(None, &a.id).await.unwrap().unwrap();
    assert_eq!((again.idle_stopped, again.hold_until, again.status), (true, Some(99), Status::Stopped));
}

async fn a_claim_moves_a_pool_instance_to_the_end_of_its_new_workspace_within_its_limit(db: Db) {
    let s = db.open().await;
    let pool = workspace(&s).await;
    let ws = workspace(&s).await; // limit 2
    let older = instance(&ws, 1, Status::Running);
    s.insert_instance(&older, 2).await.unwrap();
    let warm: Vec<InstanceRecord> = (0..3).map(|_| instance(&pool, 1, Status::Running)).collect();
    for w in &warm {
        s.insert_instance(w, 100).await.unwrap();
        let ev = berth_store::EventRecord {
            instance_id: w.id.clone(),
            at: 1,
            from: None,
            to: Status::Running,
            actor: "reconciler".into(),
            reason: None,
        };
        s.record_event(&ev).await.unwrap();
    }
    let claimed =
        InstanceRecord { workspace_id: ws.clone(), name: Some("mine".into()), pooled: true, ..warm[0].clone() };
    assert!(s.claim_instance(&warm[0].id, &pool, &claimed, 2).await.unwrap());
    let listed = s.list_instances(&ws, &InstanceFilter::default(), None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|r| &r.id).collect::<Vec<_>>(), [&warm[0].id, &older.id], "newest first");
    assert_eq!((listed[0].name.as_deref(), listed[0].pooled), (Some("mine"), true));
    assert!(s.instance(Some(&pool), &warm[0].id).await.unwrap().is_none(), "gone from the pool");
    assert!(s.events(&warm[0].id, 10).await.unwrap().is_empty(), "the pool's audit trail goes with it");
    // Claimed already: nothing to take.
    assert!(!s.claim_instance(&warm[0].id, &pool, &claimed, 5).await.unwrap());
    // The workspace is full: the pool keeps its instance.
    let over = InstanceRecord { workspace_id: ws.clone(), ..warm[1].clone() };
    let err = s.claim_instance(&warm[1].id, &pool, &over, 2).await.unwrap_err();
    assert!(matches!(err, StoreError::LimitExceeded { limit: 2 }), "{err}");
    assert!(s.instance(Some(&pool), &warm[1].id).await.unwrap().is_some());
    assert_eq!(s.events(&warm[1].id, 10).await.unwrap().len(), 1);
}

async fn pages_are_newest_first_and_filtered(db: Db) {
    let s = db.open().await;
    let ws = workspace(&s).await;
    for _ in 0..5 {
        s.insert_instance(&instance(&ws, 1, Status::Running), 100).await.unwrap();
    }
    let all = s.list_instances(&ws, &InstanceFilter::default(), None, 10).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let page = s.list_instances(&ws, &InstanceFilter::default(), Some(all[1].seq), 10).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), all[2..].iter().map(|r| r.seq).collect::<Vec<_>>());
    let none = InstanceFilter { user: Some("nobody".into()), ..Default::default() };
    assert!(s.list_instances(&ws, &none, None, 10).await.unwrap().is_empty());
}

async fn traffic_batches_add_up_and_admission_counts_what_holds_memory(db: Db) {
    let s = db.open().await;
    let ws = workspace(&s).await;
    let a = instance(&ws, 2, Status::Running);
    s.insert_instance(&a, 100).await.unwrap();
    s.insert_instance(&instance(&ws, 2, Status::Paused), 100).await.unwrap();
    s.insert_instance(&instance(&ws, 4, Status::Stopped), 100).await.unwrap();
    for (at, n) in [(10, 3), (20, 4), (15, 1)] {
        s.record_traffic(&[TrafficUpdate { id: a.id.clone(), last_request_at: at, requests: n }]).await.unwrap();
    }
    let got = s.instance(None, &a.id).await.unwrap().unwrap();
    assert_eq!((got.requests_total, got.last_request_at), (8, Some(20)), "counts add, the latest time wins");
    assert_eq!(s.active_sizes().await.unwrap(), vec![(2, 2)], "a stopped instance holds no memory");
}

async fn keys_and_share_links(db: Db) {
    let s = db.open().await;
    let ws = workspace(&s).await;
    let key = KeyRecord {
        id: KeyId::generate(),
        workspace_id: ws.clone(),
        name: "k".into(),
        prefix: "sk_abc".into(),
        hash: "ab".repeat(32),
        admin: false,
        created_at: 1,
        expires_at: Some(1_900_000_000),
        instance_id: None,
    };
    s.create_key(&key).await.unwrap();
    assert_eq!(s.key_by_hash(&key.hash).await.unwrap(), Some(key.clone()));
    assert!(s.delete_key(&ws, &key.id).await.unwrap());
    assert!(s.key_by_hash(&key.hash).await.unwrap().is_none());

    let inst = InstanceId::generate();
    let share = |ttl: i64| ShareRecord {
        id: ShareId::generate(),
        instance_id: inst.clone(),
        workspace_id: ws.clone(),
        port: 8080,
        created_at: 100,
        expires_at: 100 + ttl,
        revoked_at: None,
        created_by: "key:x".into(),
    };
    let (live, short) = (share(1000), share(10));
    s.create_share(&live).await.unwrap();
    s.create_share(&short).await.unwrap();
    assert_eq!(s.active_shares(&inst, 105).await.unwrap().len(), 2);
    assert_eq!(s.active_shares(&inst, 200).await.unwrap(), vec![live.clone()], "the expired one is gone");
    assert!(s.revoke_share(&inst, &live.id, 201).await.unwrap());
    assert!(!s.revoke_share(&inst, &live.id, 202).await.unwrap(), "revoked once");
    assert!(s.all_active_shares(203).await.unwrap().is_empty());
}

async fn env_is_sealed_at_rest_and_gateway_tokens_are_derived(db: Db) {
    use berth_store::seal::SealKey;
    // A row written in clear (by an earlier version, or before a key was given).
    let plain = db.open().await;
    let ws = workspace(&plain).await;
    let mut old = instance(&ws, 1, Status::Running);
    old.env = [("OLD_SECRET".to_string(), "old-value-123".to_string())].into();
    plain.insert_instance(&old, 10).await.unwrap();
    drop(plain);
    assert!(db.raw("SELECT env, gateway_token FROM instances").await[0].0.contains("old-value-123"));

    let key = SealKey::generate();
    let s = db.open().await.sealed_with(key.clone()).await.unwrap();
    let mut new = instance(&ws, 1, Status::Running);
    new.env = [("NEW_SECRET".to_string(), "new-value-456".to_string())].into();
    new.gateway_token = Some(key.gateway_token(new.id.as_str()));
    s.insert_instance(&new, 10).await.unwrap();
    for (env, _) in db.raw("SELECT env, gateway_token FROM instances").await {
        assert!(env.starts_with("sealed:v1:") && !env.contains("value"), "in clear at rest: {env}");
    }
    let tokens: Vec<Option<String>> =
        db.raw("SELECT env, gateway_token FROM instances ORDER BY seq").await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        tokens,
        vec![Some("tok".to_string()), None],
        "a stored (legacy) token stays, a derived one is not stored"
    );
    // Read back whole, the derived token included.
    assert_eq!(s.instance(None, &old.id).await.unwrap().unwrap().env, old.env);
    let got = s.instance(None, &new.id).await.unwrap().unwrap();
    assert_eq!((got.env, got.gateway_token), (new.env.clone(), new.gateway_token.clone()));
    s.update_instance(&got_with_env(&new)).await.unwrap();
    assert_eq!(s.instance(None, &new.id).await.unwrap().unwrap().env["NEW_SECRET"], "changed");
    drop(s);

    // Without the key (or with another), sealed values do not load.
    let keyless = db.open().await;
    assert!(matches!(keyless.instance(None, &new.id).await, Err(StoreError::Corrupt(_))));
    let wrong = db.open().await.sealed_with(SealKey::generate()).await.unwrap();
    assert!(matches!(wrong.instance(None, &new.id).await, Err(StoreError::Corrupt(_))));
}

fn got_with_env(r: &InstanceRecord) -> InstanceRecord {
    let mut r = r.clone();
    r.env.insert("NEW_SECRET".into(), "changed".into());
    r
}

async fn templates_keep_every_version_sealed_and_instances_keep_their_copy(db: Db) {
    use berth_core::{TemplateId, TemplateSpec, TemplateStatus};
    use berth_store::{seal::SealKey, TemplateRecord, VersionSource};
    let s = db.open().await.sealed_with(SealKey::generate()).await.unwrap();
    let ws = workspace(&s).await;
    let other = workspace(&s).await;
    let mut v1 = TemplateSpec::system();
    v1.image = Some("img:1".into());
    v1.env = [("TPL_SECRET".to_string(), "tpl-value-789".to_string())].into();
    let t = TemplateRecord {
        id: TemplateId::generate(),
        workspace_id: ws.clone(),
        name: "py".into(),
        version: 1,
        spec: v1.clone(),
        status: TemplateStatus::Ready,
        build: None,
        created_at: 5,
        updated_at: 5,
    };
    s.create_template(&t, None).await.unwrap();
    // Names are unique per workspace, not across them.
    let dup = TemplateRecord { id: TemplateId::generate(), ..t.clone() };
    assert!(matches!(s.create_template(&dup, None).await, Err(StoreError::Duplicate(_))));
    let elsewhere = TemplateRecord { id: TemplateId::generate(), workspace_id: other.clone(), ..t.clone() };
    s.create_template(&elsewhere, None).await.unwrap();

    assert_eq!(s.template(Some(&ws), &t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.template(Some(&other), &t.id).await.unwrap(), None, "another workspace's template");
    assert_eq!(s.template_by_name(&ws, "py").await.unwrap().unwrap().id, t.id);
    assert_eq!(s.templates(Some(&ws)).await.unwrap().len(), 1);
    assert_eq!(s.templates(None).await.unwrap().len(), 2);

    let mut v2 = v1.clone();
    v2.image = Some("img:2".into());
    let now = s.add_template_version(&t.id, 1, &v2, VersionSource::Image, None).await.unwrap().unwrap();
    assert_eq!((now.version, now.spec.image.as_deref()), (2, Some("img:2")));
    let old = s.template_version(&t.id, 1).await.unwrap().unwrap();
    assert_eq!((old.spec, old.status), (v1.clone(), TemplateStatus::Ready), "old versions stay");
    assert_eq!(s.template_version(&t.id, 3).await.unwrap(), None);
    assert_eq!(
        s.add_template_version(&TemplateId::generate(), 1, &v2, VersionSource::Image, None).await.unwrap(),
        None
    );

    // An instance keeps the copy it runs, also once the template is gone.
    let mut inst = instance(&ws, 1, Status::Running);
    inst.template = t.id.to_string();
    inst.template_spec = Some(v1.clone());
    s.insert_instance(&inst, 10).await.unwrap();
    assert_eq!(s.template_users(t.id.as_str()).await.unwrap(), 1);
    let mut got = s.instance(None, &inst.id).await.unwrap().unwrap();
    assert_eq!(got.template_spec, Some(v1.clone()));
    got.template_version = 2;
    got.template_spec = Some(v2.clone());
    s.update_instance(&got).await.unwrap();
    assert_eq!(s.instance(None, &inst.id).await.unwrap().unwrap().template_spec, Some(v2));
    assert!(s.delete_template(&t.id).await.unwrap());
    assert!(!s.delete_template(&t.id).await.unwrap());
    assert_eq!(s.template_version(&t.id, 1).await.unwrap(), None, "versions go with it");
    assert!(s.instance(None, &inst.id).await.unwrap().unwrap().template_spec.is_some());

    // Nothing of a template's env is in clear at rest.
    let texts: Vec<String> = db
        .raw(
            "SELECT spec, NULL FROM template_versions UNION ALL \
             SELECT template_spec, NULL FROM instances WHERE template_spec IS NOT NULL",
        )
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(texts.len() >= 2);
    for text in texts {
        assert!(text.starts_with("sealed:v1:") && !text.contains("tpl-value"), "in clear at rest: {text}");
    }
}

async fn a_build_is_a_version_that_becomes_ready_or_failed_and_a_restart_fails_unfinished_ones(db: Db) {
    use berth_core::{TemplateId, TemplateSpec, TemplateStatus};
    use berth_store::{BuildLine, TemplateRecord, VersionSource};
    let s = db.open().await;
    let ws = workspace(&s).await;
    let mut spec = TemplateSpec::system();
    spec.image = Some("berth/tpl_x:a".into());
    let t = TemplateRecord {
        id: TemplateId::generate(),
        workspace_id: ws.clone(),
        name: "built".into(),
        version: 1,
        spec: spec.clone(),
        status: TemplateStatus::Building,
        build: Some(1),
        created_at: 5,
        updated_at: 5,
    };
    s.create_template(&t, Some(("berth/tpl_x:a", "FROM scratch\n"))).await.unwrap();
    let got = s.template(Some(&ws), &t.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.build), (TemplateStatus::Building, Some(1)));
    assert!(s.ready_versions().await.unwrap().is_empty(), "nothing is ready while it builds");
    let b = s.template_build(&t.id, 1).await.unwrap().unwrap();
    assert_eq!(
        (b.status, b.image.as_str(), b.dockerfile.as_str(), b.finished_at),
        (TemplateStatus::Building, "berth/tpl_x:a", "FROM scratch\n", None)
    );

    let log = vec![BuildLine { timestamp: "2026-12-05T00:00:00Z".into(), message: "Step 1/1 : FROM scratch".into() }];
    assert!(s.finish_build(&t.id, 1, TemplateStatus::Ready, None, &log).await.unwrap());
    assert!(!s.finish_build(&t.id, 9, TemplateStatus::Ready, None, &log).await.unwrap(), "no such build");
    let b = s.template_build(&t.id, 1).await.unwrap().unwrap();
    assert_eq!((b.status, b.log.clone()), (TemplateStatus::Ready, log));
    assert!(b.finished_at.is_some());
    assert_eq!(s.ready_versions().await.unwrap(), vec![(t.id.clone(), 1)]);

    // A change that keeps the image keeps its build and status; a new build starts
    // `building`; a server restart fails it and keeps version 2 the newest ready one.
    let mut v2 = spec.clone();
    v2.env = [("A".to_string(), "1".to_string())].into();
    let now = s.add_template_version(&t.id, 1, &v2, VersionSource::Same, None).await.unwrap().unwrap();
    assert_eq!((now.version, now.status, now.build), (2, TemplateStatus::Ready, Some(1)));
    // A change made from version 1 comes too late: nothing is added.
    assert_eq!(s.add_template_version(&t.id, 1, &v2, VersionSource::Same, None).await.unwrap(), None);
    assert_eq!(s.template(None, &t.id).await.unwrap().unwrap().version, 2);
    let now = s
        .add_template_version(&t.id, 2, &spec, VersionSource::Build, Some(("berth/tpl_x:b", "FROM x\n")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.version, now.status, now.build), (3, TemplateStatus::Building, Some(3)));
    assert_eq!(s.fail_unfinished_builds(i64::MAX, "the server restarted").await.unwrap(), 1);
    let b = s.template_build(&t.id, 3).await.unwrap().unwrap();
    assert_eq!((b.status, b.error.as_deref()), (TemplateStatus::Failed, Some("the server restarted")));
    assert_eq!(s.template_version(&t.id, 3).await.unwrap().unwrap().status, TemplateStatus::Failed);
    assert_eq!(s.ready_versions().await.unwrap(), vec![(t.id.clone(), 2)]);
    let builds = s.template_builds(&t.id).await.unwrap();
    assert_eq!(builds.iter().map(|b| b.version).collect::<Vec<_>>(), vec![1, 3]);
}

on_both!(
    inserts_respect_the_limit_and_records_round_trip,
    a_claim_moves_a_pool_instance_to_the_end_of_its_new_workspace_within_its_limit,
    pages_are_newest_first_and_filtered,
    traffic_batches_add_up_and_admission_counts_what_holds_memory,
    keys_and_share_links,
    env_is_sealed_at_rest_and_gateway_tokens_are_derived,
    templates_keep_every_version_sealed_and_instances_keep_their_copy,
    a_build_is_a_version_that_becomes_ready_or_failed_and_a_restart_fails_unfinished_ones,
);

/// Two pools on one database stand for two replicas: 40 creates split across them,
/// all at once, never put more instances in a workspace than its limit.
async fn concurrent_creates_on_two_pools_keep_the_limit(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let ws = workspace(&a).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let ws = ws.clone();
        tasks.push(tokio::spawn(async move { s.insert_instance(&instance(&ws, 1, Status::Running), 7).await }));
    }
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => made += 1,
            Err(StoreError::LimitExceeded { limit: 7 }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(made, 7);
    assert_eq!(b.live_instance_count(&ws).await.unwrap(), 7);
}

/// A lock named the same on two replicas is held by one at a time; leadership too,
/// and it passes on when its holder's connection goes.
async fn locks_and_leadership_are_exclusive_across_pools(db: Db) {
    use berth_store::coord::SharedLocks;
    let (a, b) = (db.open().await, db.open().await);
    let (locks_a, locks_b) = (SharedLocks::new(a.clone()), SharedLocks::new(b.clone()));
    let held = locks_a.lock("instance:x").await.unwrap();
    let also = locks_a.lock("instance:z").await.unwrap();
    let postgres = a.backend() == berth_store::Backend::Postgres;
    // SQLite has one server: its locks are the server's own, granted here at once.
    assert_eq!(locks_b.try_lock("instance:x").await.unwrap().is_none(), postgres);
    assert!(locks_b.try_lock("instance:y").await.unwrap().is_some());
    // A waiter gets the lock once it is released.
    let waiter = tokio::spawn(async move { locks_b.lock("instance:x").await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(waiter.is_finished(), !postgres);
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.unwrap().unwrap().unwrap();
    drop(also);

    let mut leader = a.try_lead().await.unwrap().expect("the first replica leads");
    assert!(leader.holds().await);
    assert_eq!(b.try_lead().await.unwrap().is_none(), postgres, "one leader at a time");
    drop(leader);
    let mut took_over = false;
    for _ in 0..50 {
        if b.try_lead().await.unwrap().is_some() {
            took_over = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(took_over, "leadership passes on when its holder goes");
}

/// A change committed through one replica is announced to the others.
async fn changes_are_announced_to_other_replicas(db: Db) {
    use berth_store::coord::Change;
    let (a, b) = (db.open().await, db.open().await);
    let Some(mut changes) = b.changes().await.unwrap() else {
        assert_eq!(a.backend(), berth_store::Backend::Sqlite, "only SQLite announces nothing");
        return;
    };
    let ws = workspace(&a).await;
    let mut rec = instance(&ws, 1, Status::Running);
    a.insert_instance(&rec, 5).await.unwrap();
    async fn next(changes: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.recv()).await.unwrap().unwrap()
    }
    assert_eq!(next(&mut changes).await, Change::Instance(rec.id.to_string()));
    // Traffic counters are not announced; a status change is.
    a.record_traffic(&[TrafficUpdate { id: rec.id.clone(), last_request_at: 5, requests: 1 }]).await.unwrap();
    rec.status = Status::Stopped;
    a.update_instance(&rec).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Instance(rec.id.to_string()));
    let key = key_record(&ws, "h-announce");
    a.create_key(&key).await.unwrap();
    a.delete_key(&ws, &key.id).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Key(key.id.to_string()));
}

fn key_record(ws: &WorkspaceId, hash: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId::generate(),
        workspace_id: ws.clone(),
        name: "k".into(),
        prefix: "sk-x".into(),
        hash: hash.into(),
        admin: false,
        created_at: 1,
        expires_at: None,
        instance_id: None,
    }
}

/// Everything written to one backend arrives whole in the other through export and
/// import: workspaces, keys, instances (sealed env, seq), events, shares, the ledger
/// and templates; and new rows continue the sequences.
async fn export_then_import_keeps_every_record(from: Db, to: Db) {
    use berth_store::seal::SealKey;
    use berth_store::{transfer, EventRecord, LedgerEntry};
    let key = SealKey::generate();
    let src = from.open().await.sealed_with(key.clone()).await.unwrap();
    src.meta_init("install_id", "inst-x").await.unwrap();
    let ws = workspace(&src).await;
    let k = key_record(&ws, "h-export");
    src.create_key(&k).await.unwrap();
    let a = instance(&ws, 1, Status::Running);
    src.insert_instance(&a, 5).await.unwrap();
    src.record_event(&EventRecord {
        instance_id: a.id.clone(),
        at: 3,
        from: Some(Status::Creating),
        to: Status::Running,
        actor: "key:x".into(),
        reason: Some("made".into()),
    })
    .await
    .unwrap();
    let share = ShareRecord {
        id: ShareId::generate(),
        instance_id: a.id.clone(),
        workspace_id: ws.clone(),
        port: 3737,
        created_at: 1,
        expires_at: i64::MAX / 2,
        revoked_at: None,
        created_by: "key:x".into(),
    };
    src.create_share(&share).await.unwrap();
    let topup = LedgerEntry {
        workspace_id: ws.clone(),
        instance_id: None,
        kind: "topup".into(),
        amount_micros: 5_000_000,
        description: "top-up".into(),
        model: None,
        input_tokens: None,
        output_tokens: None,
    };
    src.post_ledger(&topup).await.unwrap();
    let charge = LedgerEntry {
        instance_id: Some(a.id.clone()),
        kind: "managed_usage".into(),
        amount_micros: -1_234,
        model: Some("m".into()),
        input_tokens: Some(10),
        output_tokens: Some(2),
        ..topup.clone()
    };
    src.charge_within_balance(&charge, None).await.unwrap().unwrap();

    let mut file = Vec::new();
    let counts = transfer::export(&src, &mut file).await.unwrap();
    assert!(
        counts.contains(&("instances".to_string(), 1)) && counts.contains(&("ledger".to_string(), 2)),
        "{counts:?}"
    );
    let text = String::from_utf8(file.clone()).unwrap();
    assert!(!text.contains("v1: value") && !text.contains("\"K\":\"v\""), "env stays sealed in the export");

    let dst = to.open().await.sealed_with(key).await.unwrap();
    let imported = transfer::import(&dst, &mut std::io::Cursor::new(&file)).await.unwrap();
    assert_eq!(imported, counts);
    assert_eq!(dst.meta("install_id").await.unwrap().as_deref(), Some("inst-x"));
    assert_eq!(dst.key_by_hash("h-export").await.unwrap().map(|k| k.id), Some(k.id));
    let got = dst.instance(Some(&ws), &a.id).await.unwrap().unwrap();
    let want = src.instance(Some(&ws), &a.id).await.unwrap().unwrap();
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "the instance, env and seq included");
    assert_eq!(dst.events(&a.id, 10).await.unwrap().len(), 1);
    assert_eq!(dst.active_shares(&a.id, 2).await.unwrap().len(), 1);
    assert_eq!(dst.balance(&ws).await.unwrap(), Some(5_000_000 - 1_234));
    assert_eq!(
        format!("{:?}", dst.ledger(&ws, None, 10).await.unwrap()),
        format!("{:?}", src.ledger(&ws, None, 10).await.unwrap())
    );
    // New rows continue after the imported ones.
    let b = instance(&ws, 1, Status::Running);
    dst.insert_instance(&b, 5).await.unwrap();
    let b = dst.instance(None, &b.id).await.unwrap().unwrap();
    assert!(b.seq > got.seq, "{} after {}", b.seq, got.seq);
    // A second import into a database that has data is refused, and changes nothing.
    let err = transfer::import(&dst, &mut std::io::Cursor::new(&file)).await.unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
}

#[tokio::test]
async fn sqlite_export_imports_into_postgres() {
    export_then_import_keeps_every_record(Db::sqlite(), Db::postgres()).await
}

#[tokio::test]
async fn postgres_export_imports_into_sqlite() {
    export_then_import_keeps_every_record(Db::postgres(), Db::sqlite()).await
}

on_both!(
    concurrent_creates_on_two_pools_keep_the_limit,
    locks_and_leadership_are_exclusive_across_pools,
    changes_are_announced_to_other_replicas,
);

/// A database that does not answer is reported as unavailable (the API's 503), not as
/// a failed statement.
#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_broken() {
    let opts = PoolOptions { max_connections: 1, acquire_timeout: std::time::Duration::from_secs(1) };
    // Port 1 on loopback: nothing listens there.
    let err = SqlStore::connect("postgres://postgres@127.0.0.1:1/none", &opts).await.err().expect("no database there");
    assert!(err.is_unavailable(), "{err:?}");
    let err = SqlStore::connect("mysql://x@127.0.0.1/none", &opts).await.err().expect("not a database URL we take");
    assert!(!err.is_unavailable() && err.to_string().contains("sqlite:PATH or postgres://"), "{err}");
}
