//! Tests that need a tool the machine may lack (python3's `openai` package,
//! Chromium, pebble): no such test may pass silently without its tool.
//!
//! * With its `BERTH_REQUIRE_*` variable set (to anything but empty or `0`; CI sets
//!   them), a missing tool fails the test.
//! * Without it, the test skips what needs the tool and says so loudly on stderr,
//!   and on the controlling terminal when there is one: nextest shows a passing
//!   test's output only with `--success-output`, a terminal line is seen anyway.
//!
//! ```no_run
//! # fn chromium_found() -> bool { false }
//! if !chromium_found() {
//!     berth_test_util::require::missing("BERTH_REQUIRE_CHROMIUM", "chromium", "apt-get install chromium", "the browser part");
//!     return;
//! }
//! ```

use std::io::Write;

/// Whether `var` asks for its tool to be required: set to anything but empty or `0`.
pub fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `program` is on the `PATH`.
pub fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// Where `program` is on the `PATH` (the first executable file of that name).
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}

/// Call when `tool` is missing, before skipping `what` (a test, or a part of one).
/// Panics when `var` requires the tool; otherwise prints a loud SKIPPED line naming
/// the test, what is skipped, why, and how to install it (`install`).
pub fn missing(var: &str, tool: &str, install: &str, what: &str) {
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    assert!(!required(var), "{test}: {tool} is required ({var} is set) but missing; install it: {install}");
    let line = format!(
        "\n!!!!!!!! SKIPPED in {test}: {what}, because {tool} is missing (install: {install}). \
         Set {var}=1 to make this a failure. !!!!!!!!\n"
    );
    eprintln!("{line}");
    // A terminal shows it even when the test runner keeps a passing test's stderr.
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        let _ = tty.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_path_finds_executables_only() {
        assert!(super::on_path("sh"));
        assert!(!super::on_path("berth-no-such-program"));
    }
}
