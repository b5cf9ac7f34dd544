//! Real PostgreSQL for tests: [`database_url`] gives each caller a fresh, empty
//! database of its own on a real cluster (no mock, no shared schema).
//!
//! # The cluster
//!
//! * With `BERTH_TEST_PG_URL` set (an admin URL such as
//!   `postgres://postgres@127.0.0.1:PORT/postgres`), that cluster: `scripts/test.sh`
//!   starts one for the whole run with `pg_cluster.sh start DIR` (this directory),
//!   exports its URL, and stops and removes it when the run ends. The cluster must be
//!   a throwaway one on this machine (see the sweep below).
//! * Without it (a plain `cargo test` or `cargo nextest run`), the cluster in
//!   `$TMPDIR/berth-test-pg-{uid}`, shared by every test process of this user: the
//!   first one to need it starts it (through the same `pg_cluster.sh`, holding the
//!   lock file `$TMPDIR/berth-test-pg-{uid}.lock`, so concurrent test processes start
//!   it once), later ones reuse it while it answers. It keeps running after the tests,
//!   for the next run (about a second saved each time); remove it with [`stop_shared`]
//!   or `bash crates/test-util/src/pg_cluster.sh stop $TMPDIR/berth-test-pg-$(id -u)`.
//!
//! Either way the cluster trusts connections from 127.0.0.1 (user `postgres`, no
//! password), allows 300 connections and runs without durability (`fsync`,
//! `synchronous_commit` and `full_page_writes` off). As root, `initdb` and `postgres`
//! run as the `postgres` system user (they refuse root).
//!
//! # The databases
//!
//! [`database_url`] runs `CREATE DATABASE` through `psql`; a database is named
//! `t_{pid}_{n}_{unix seconds}_{random}` after the process that created it. Nothing
//! drops a database when its test ends (a `String` has no owner to notice), so each
//! process, on its first [`database_url`], drops the test databases that are more
//! than [`SWEEP_AFTER`] old, whose creating process is gone and which nobody is
//! connected to: at about 7 MB each, a run of many tests would otherwise fill the
//! disk. (A server started by a test may outlive it for a moment; it keeps its
//! connections, and so its database.)
//!
//! # Without PostgreSQL
//!
//! [`database_url`] panics when the binaries are missing. A test that should rather
//! skip on a developer's machine asks [`available`] first, which follows the rule of
//! [`crate::require`]: with `BERTH_REQUIRE_POSTGRES` set (CI sets it) a missing
//! PostgreSQL fails the test.
//!
//! Everything here is blocking (`std::process::Command`), fine in sync and in
//! `#[tokio::test]` tests alike (a few tens of milliseconds per database).

use nix::fcntl::{Flock, FlockArg};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The admin URL of the cluster to use instead of starting one.
pub const URL_VAR: &str = "BERTH_TEST_PG_URL";
/// Set (to anything but empty or `0`), a missing PostgreSQL fails [`available`].
pub const REQUIRE_VAR: &str = "BERTH_REQUIRE_POSTGRES";
/// How old a dead process's database must be before a sweep drops it.
pub const SWEEP_AFTER: Duration = Duration::from_secs(300);

const SCRIPT: &str = include_str!("pg_cluster.sh");
const INSTALL: &str = "apt-get install postgresql postgresql-client";

/// The URL of a fresh, empty database created for the caller, on the test cluster:
/// `postgres://postgres@127.0.0.1:PORT/t_...`. The first call of a process may start
/// the cluster (about a second). Panics when PostgreSQL is missing or fails.
pub fn database_url() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static SWEPT: OnceLock<()> = OnceLock::new();
    let admin = admin_url();
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let name = format!(
        "t_{}_{}_{secs}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        berth_core::ids::random_label(4)
    );
    let mut commands = vec![format!("CREATE DATABASE {name}")];
    let sweep = SWEPT.set(()).is_ok();
    if sweep {
        // Test databases nobody is connected to (the rest is decided here).
        commands.push(
            "SELECT datname FROM pg_database d WHERE datname LIKE 't\\_%' \
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)"
                .into(),
        );
    }
    let listed = psql(&admin, &commands, true).unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
    if sweep {
        sweep_databases(&admin, listed.lines(), secs);
    }
    with_database(&admin, &name)
}

/// The admin URL of the test cluster (its `postgres` database, superuser
/// `postgres`): `BERTH_TEST_PG_URL`, or the shared cluster's, started if need be.
/// For tests that create, drop or inspect databases themselves, or must reach the
/// cluster while their server is down. Panics when PostgreSQL is missing or fails.
pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => shared_cluster(),
    })
    .clone()
}

/// Whether tests can have a PostgreSQL database here: `BERTH_TEST_PG_URL` is set and
/// `psql` found, or the server binaries (`initdb`) and `psql` are installed. When not,
/// says so loudly ([`crate::require::missing`]), and panics when
/// `BERTH_REQUIRE_POSTGRES` is set; the caller then skips:
///
/// ```no_run
/// if !berth_test_util::postgres::available() {
///     return;
/// }
/// let url = berth_test_util::postgres::database_url();
/// ```
pub fn available() -> bool {
    let found =
        psql_bin().is_some() && (std::env::var_os(URL_VAR).is_some_and(|u| !u.is_empty()) || bin_dir().is_some());
    if !found {
        crate::require::missing(REQUIRE_VAR, "PostgreSQL (initdb, postgres, psql)", INSTALL, "the test");
    }
    found
}

/// Stops and removes the cluster shared by this user's test processes (the one used
/// without `BERTH_TEST_PG_URL`), if there is one. Never the cluster of
/// `BERTH_TEST_PG_URL`. Call it only when no test uses the cluster any more.
pub fn stop_shared() {
    let _lock = lock_shared();
    if let Err(e) = cluster_script("stop", &shared_dir()) {
        panic!("stopping the shared test cluster: {e}");
    }
}

/// `$TMPDIR/berth-test-pg-{uid}`: the shared cluster's directory.
fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!("berth-test-pg-{}", uid()))
}

fn uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// The shared cluster's lock, held while a process checks or starts the cluster.
fn lock_shared() -> Flock<std::fs::File> {
    let path = std::env::temp_dir().join(format!("berth-test-pg-{}.lock", uid()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock the shared test cluster's lock")
}

/// The shared cluster's admin URL, after making sure it answers.
fn shared_cluster() -> String {
    if bin_dir().is_none() {
        panic!("PostgreSQL's server binaries (initdb) are missing: {INSTALL} (or set {URL_VAR})");
    }
    let dir = shared_dir();
    let _lock = lock_shared();
    if let Ok(url) = std::fs::read_to_string(dir.join("url")) {
        if answers(url.trim(), &dir) {
            return url.trim().to_string();
        }
    }
    // Not started, stopped (a reboot), or not answering: start it; if even that does
    // not answer (an unrelated server on the port of a stale state), start afresh.
    let mut last = String::new();
    for fresh in [false, true] {
        if fresh {
            let _ = cluster_script("stop", &dir);
        }
        match cluster_script("start", &dir) {
            Ok(url) if answers(&url, &dir) => return url,
            Ok(url) => last = format!("{url} does not answer as the cluster in {}", dir.display()),
            Err(e) => last = e,
        }
    }
    panic!("could not start the shared test cluster in {}: {last}", dir.display())
}

/// Whether `url` reaches the cluster whose data directory is `dir/data`.
fn answers(url: &str, dir: &Path) -> bool {
    psql(url, &["SHOW data_directory".to_string()], true)
        .is_ok_and(|out| Path::new(out.trim()) == dir.join("data").as_path())
}

/// Runs `pg_cluster.sh ACTION DIR`; its output (the URL for `start`), trimmed.
fn cluster_script(action: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new("bash")
        .args(["-c", SCRIPT, "pg_cluster.sh", action])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running bash: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("pg_cluster.sh {action} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// Drops what [`database_url`]'s listing (`names`, nobody connected) shows to be test
/// databases of processes that are gone, older than [`SWEEP_AFTER`]. Best effort.
fn sweep_databases<'a>(admin: &str, names: impl Iterator<Item = &'a str>, now: u64) {
    if !Path::new("/proc/self").exists() {
        return; // no way to tell a live process
    }
    let drops: Vec<String> = names
        .filter_map(|name| {
            let (pid, created) = parse_name(name)?;
            let stale = now.saturating_sub(created) > SWEEP_AFTER.as_secs();
            (stale && !Path::new(&format!("/proc/{pid}")).exists())
                .then(|| format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        })
        .collect();
    if !drops.is_empty() {
        // Two processes may sweep the same database: errors are expected, and ignored.
        let _ = psql(admin, &drops, false);
    }
}

/// `t_{pid}_{n}_{secs}_{random}` → (pid, secs); `None` for any other name.
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix("t_")?.split('_');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    let secs = parts.next()?.parse().ok()?;
    let random = parts.next()?;
    let ok = !random.is_empty() && random.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok && parts.next().is_none()).then_some((pid, secs))
}

/// `url` with its database (path) replaced by `db`, its query kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Runs `commands` (each its own `-c`, so its own transaction) on `url`; stdout
/// (unaligned, tuples only). With `stop_on_error`, the first failing command fails.
fn psql(url: &str, commands: &[String], stop_on_error: bool) -> Result<String, String> {
    let psql = psql_bin().ok_or_else(|| format!("psql not found: {INSTALL}"))?;
    let mut cmd = Command::new(&psql);
    cmd.args(["-X", "-q", "-A", "-t", "-d", url]);
    if stop_on_error {
        cmd.args(["-v", "ON_ERROR_STOP=1"]);
    }
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", psql.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("psql {url} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The server binaries' directory, as `pg_cluster.sh` finds it: `$BERTH_PG_BIN` (if
/// set, that or none), the newest `/usr/lib/postgresql/*/bin` (Debian), or `initdb`'s
/// on the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BERTH_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: Vec<u32> =
                e.file_name().to_str()?.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    crate::require::find_on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `psql`: the server binaries' own (not Debian's `/usr/bin/psql`, a Perl wrapper
/// that costs ~15 ms a call), else the `PATH`'s.
fn psql_bin() -> Option<PathBuf> {
    static PSQL: OnceLock<Option<PathBuf>> = OnceLock::new();
    PSQL.get_or_init(|| {
        bin_dir().map(|d| d.join("psql")).filter(|p| p.is_file()).or_else(|| crate::require::find_on_path("psql"))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str, sql: &str) -> String {
        psql(url, &[sql.to_string()], true).unwrap().trim().to_string()
    }

    /// Two databases are two: a table made in one is not in the other.
    #[test]
    fn postgres_databases_are_isolated() {
        if !available() {
            return;
        }
        let (a, b) = (database_url(), database_url());
        assert_ne!(a, b);
        let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
        assert_eq!(query(&a, tables), "0", "{a} is not empty");
        assert_eq!(query(&b, tables), "0", "{b} is not empty");
        query(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
        assert_eq!(query(&a, "SELECT x FROM t"), "1");
        assert_eq!(query(&b, tables), "0", "a table made in {a} shows in {b}");
        assert!(psql(&b, &["SELECT x FROM t".to_string()], true).is_err());
        // The cluster is the one set up for tests.
        let admin = admin_url();
        assert_eq!(query(&admin, "SHOW fsync"), "off");
        assert_eq!(query(&admin, "SHOW max_connections"), "300");
        assert_eq!(query(&admin, "SELECT current_database()"), "postgres");
    }

    #[test]
    fn postgres_names_and_urls() {
        assert_eq!(parse_name("t_123_4_1700000000_ab9z"), Some((123, 1_700_000_000)));
        for other in ["t_123_4_ab9z", "postgres", "t_x_4_1_ab", "t_1_2_3_AB", "t_1_2_3_ab_c", "t_1_2_3_"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
        assert_eq!(with_database("postgres://postgres@127.0.0.1:5/postgres", "d"), "postgres://postgres@127.0.0.1:5/d");
        assert_eq!(with_database("postgres://u@h:5", "d"), "postgres://u@h:5/d");
        assert_eq!(with_database("postgres://u@h:5/x?sslmode=disable", "d"), "postgres://u@h:5/d?sslmode=disable");
    }
}
