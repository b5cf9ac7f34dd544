//! Template builds from a Dockerfile: checking what a client sends, and the context a
//! builder gets (the client's files, the Dockerfile, and the host's CA bundle so that
//! `pip`/`npm`/`curl` inside `RUN` steps trust a TLS-intercepting proxy).
//!
//! The client's context is a tar archive, gzip-compressed or not. berth re-packs it
//! with two files of its own under `.berth/` (a name the client's files may not use):
//! the Dockerfile, and the CA bundle, which the rewritten Dockerfile copies into every
//! stage (to [`CA_PATH`], with [`CA_VARS`] pointing at it) right after its `FROM`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Where the host's CA bundle is inside built images and instances. A path of berth's
/// own, not `/etc/ssl/certs/ca-certificates.crt`: the image's `update-ca-certificates`
/// rewrites that one (and could not, were it mounted read-only).
pub const CA_PATH: &str = "/usr/local/share/berth/ca-certificates.crt";

/// Variables that point the usual TLS clients at [`CA_PATH`]: OpenSSL (Python's `ssl`,
/// `curl`, `wget`), Python `requests` and `pip`, Node (`npm`), git.
pub const CA_VARS: &[&str] =
    &["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"];

/// Largest context accepted, unpacked (bytes).
pub const MAX_CONTEXT_BYTES: u64 = 256 << 20;
/// Largest Dockerfile (bytes).
pub const MAX_DOCKERFILE_BYTES: usize = 1 << 20;

/// The Dockerfile inside the context berth sends.
pub const DOCKERFILE_PATH: &str = ".berth/Dockerfile";
/// The CA bundle inside the context berth sends.
const CA_FILE: &str = ".berth/ca-certificates.crt";
/// The label every stage of a build carries: its scope (the workspace).
pub const SCOPE_LABEL: &str = "berth.build-scope";
/// The directory the client's own files may not use.
const RESERVED_DIR: &str = ".berth";

/// A Dockerfile build of a template version.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The image it tags.
    pub tag: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The client's context (tar, maybe gzip); empty: none.
    pub context: Vec<u8>,
    /// Labels of the image.
    pub labels: std::collections::HashMap<String, String>,
    /// Whose build it is (a workspace id): builds share cached steps only within
    /// one scope.
    pub scope: String,
}

/// Checks a Dockerfile: not empty, not too long, and a `FROM` before any instruction
/// but `ARG` (comments and parser directives aside).
pub fn check_dockerfile(text: &str) -> Result<(), String> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(format!("the Dockerfile is longer than {} KiB", MAX_DOCKERFILE_BYTES >> 10));
    }
    if text.contains('\0') {
        return Err("the Dockerfile contains a NUL byte".into());
    }
    for instr in instructions(text) {
        match instr.keyword.as_str() {
            "FROM" => return Ok(()),
            "ARG" => continue,
            other => return Err(format!("the Dockerfile must start with FROM (its first instruction is {other})")),
        }
    }
    Err("the Dockerfile has no FROM instruction".into())
}

/// Checks a client's context: a readable tar archive (gzip-compressed or not) of at
/// most [`MAX_CONTEXT_BYTES`], with no path under `.berth/`, absolute or climbing out.
/// Answers how many entries it holds.
pub fn check_context(context: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    each_entry(context, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The context a builder gets: the client's entries, `.dockerignore` amended so it
/// never drops berth's files, the Dockerfile and, when there is one, the CA bundle
/// (with the Dockerfile rewritten to install it in every stage).
pub fn builder_context(
    context: &[u8],
    dockerfile: &str,
    scope: &str,
    ca_bundle: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut out = tar::Builder::new(Vec::new());
    each_entry(context, |entry| {
        // The names come from the entry, not its header: a header holds only the
        // first 100 bytes of a long (GNU or PAX) name or link target.
        let path: PathBuf = entry.path.components().filter(|c| !matches!(c, Component::CurDir)).collect();
        if path == Path::new(".dockerignore") {
            let mut text = entry.data;
            text.extend_from_slice(b"\n!.berth\n!.berth/**\n");
            return append(&mut out, ".dockerignore", &text);
        }
        let mut h = entry.header.clone();
        let written = match &entry.link {
            Some(target) => out.append_link(&mut h, &path, target),
            None => out.append_data(&mut h, &path, entry.data.as_slice()),
        };
        written.map_err(|e| format!("context entry `{}`: {e}", path.display()))
    })?;
    if let Some(ca) = ca_bundle {
        append(&mut out, CA_FILE, ca)?;
    }
    let text = prepare(dockerfile, scope, ca_bundle.is_some());
    append(&mut out, DOCKERFILE_PATH, text.as_bytes())?;
    out.into_inner().map_err(|e| format!("context: {e}"))
}

fn append(out: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> Result<(), String> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    out.append_data(&mut h, path, data).map_err(|e| format!("context: {e}"))
}

/// One entry of a client's context, read whole.
struct Entry {
    header: tar::Header,
    /// Its full name (long GNU and PAX names included).
    path: PathBuf,
    /// Where a symbolic or hard link points.
    link: Option<PathBuf>,
    data: Vec<u8>,
}

/// Calls `f` with every entry of a tar (or tar.gz), refusing what a build must not get.
fn each_entry(context: &[u8], mut f: impl FnMut(Entry) -> Result<(), String>) -> Result<(), String> {
    if context.is_empty() {
        return Ok(());
    }
    let reader: Box<dyn Read + '_> = if context.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(context))
    } else {
        Box::new(context)
    };
    let mut archive = tar::Archive::new(reader.take(MAX_CONTEXT_BYTES + (1 << 20)));
    let mut total: u64 = 0;
    let entries = archive.entries().map_err(|e| format!("the context is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the context is not a readable tar archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("context: {e}"))?.into_owned();
        let shown = path.display().to_string();
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("context entry `{shown}` is absolute or climbs out of the context"));
        }
        let first = path.components().find(|c| !matches!(c, Component::CurDir));
        if first.is_some_and(|c| c.as_os_str() == RESERVED_DIR) {
            return Err(format!(
                "context entry `{shown}`: `{RESERVED_DIR}/` is berth's own (its Dockerfile and CA bundle)"
            ));
        }
        total += entry.header().size().unwrap_or(0);
        if total > MAX_CONTEXT_BYTES {
            return Err(format!("the context unpacks to more than {} MiB", MAX_CONTEXT_BYTES >> 20));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| format!("context entry `{shown}`: {e}"))?;
        let link = match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                entry.link_name().map_err(|e| format!("context entry `{shown}`: {e}"))?.map(|l| l.into_owned())
            }
            _ => None,
        };
        f(Entry { header: entry.header().clone(), path, link, data })?;
    }
    Ok(())
}

/// One instruction of a Dockerfile: its keyword (upper case), its arguments
/// (continuation lines joined) and the line (0-based) its text ends on.
struct Instruction {
    keyword: String,
    args: String,
    last_line: usize,
}

/// The images a Dockerfile takes files from: every `FROM` (but `scratch` and earlier
/// stages) and every `COPY --from` that names no earlier stage, with the `ARG`
/// defaults declared before the first `FROM` substituted (berth passes no build
/// arguments, so the defaults are what the builder uses). A reference that still
/// holds a variable it cannot resolve is refused, naming it.
pub fn image_refs(text: &str) -> Result<Vec<String>, String> {
    let mut globals: Vec<(String, String)> = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    let mut refs = Vec::new();
    let mut seen_from = false;
    for instr in instructions(text) {
        match instr.keyword.as_str() {
            "ARG" if !seen_from => {
                for decl in instr.args.split_whitespace() {
                    let (name, value) = decl.split_once('=').unwrap_or((decl, ""));
                    let value = expand(value.trim_matches('"'), &globals)?;
                    globals.retain(|(n, _)| n != name);
                    globals.push((name.to_string(), value));
                }
            }
            "FROM" => {
                seen_from = true;
                let mut words = instr.args.split_whitespace().filter(|w| !w.starts_with("--"));
                let image = expand(words.next().unwrap_or_default(), &globals)?;
                let is_stage = stages.contains(&image.to_ascii_lowercase());
                if !image.eq_ignore_ascii_case("scratch") && !is_stage && !refs.contains(&image) {
                    refs.push(image);
                }
                if let (Some(as_), Some(name)) = (words.next(), words.next()) {
                    if as_.eq_ignore_ascii_case("as") {
                        stages.push(name.to_ascii_lowercase());
                    }
                }
            }
            "COPY" => {
                let from = instr.args.split_whitespace().find_map(|w| w.strip_prefix("--from="));
                let Some(from) = from else { continue };
                if from.contains('$') {
                    return Err(format!("`COPY --from={from}`: name the stage or image without variables"));
                }
                let earlier = stages.contains(&from.to_ascii_lowercase()) || from.parse::<usize>().is_ok();
                if !earlier && !refs.iter().any(|r| r == from) {
                    refs.push(from.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(refs)
}

/// `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}` replaced by the values of
/// `vars` (an undeclared name is refused: the builder would make it empty).
fn expand(text: &str, vars: &[(String, String)]) -> Result<String, String> {
    let value = |name: &str| vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (inner, after) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("`{text}`: an unclosed `${{`"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let (name, op) = match inner.find(':') {
            Some(i) => (&inner[..i], Some(&inner[i..])),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(format!("`{text}`: `${inner}` is not a variable berth can resolve"));
        }
        let set = value(name).filter(|v| !v.is_empty());
        match (op, set) {
            (None, Some(v)) => out.push_str(v),
            (None, None) => return Err(format!("`{text}`: `{name}` has no default value (`ARG {name}=...`)")),
            (Some(op), set) if op.starts_with(":-") => out.push_str(set.unwrap_or(&op[2..])),
            (Some(op), set) if op.starts_with(":+") => out.push_str(if set.is_some() { &op[2..] } else { "" }),
            (Some(op), _) => return Err(format!("`{text}`: `{op}` is not supported here")),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// The instructions of a Dockerfile, comments, blank lines and continuations aside.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        // Blank and comment lines are skipped, also inside a continued instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // A line ending in `\` continues the instruction.
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        match &mut current {
            Some((_, args)) => {
                args.push(' ');
                args.push_str(body.trim());
            }
            None => {
                let (keyword, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some((keyword.to_ascii_uppercase(), args.trim().to_string()));
            }
        }
        if continued {
            continue;
        }
        let (keyword, args) = current.take().unwrap_or_default();
        out.push(Instruction { keyword, args, last_line: i });
    }
    if let Some((keyword, args)) = current {
        out.push(Instruction { keyword, args, last_line: text.lines().count().saturating_sub(1) });
    }
    out
}

/// The Dockerfile a builder gets: right after every `FROM`, a label naming the
/// build's `scope` (so the builder's cache, keyed by each step's parent, is never
/// shared between scopes: one tenant's cached layers are never another's) and, with
/// a CA bundle, the bundle installed.
pub fn prepare(dockerfile: &str, scope: &str, ca: bool) -> String {
    let after: std::collections::HashSet<usize> =
        instructions(dockerfile).into_iter().filter(|i| i.keyword == "FROM").map(|i| i.last_line).collect();
    let vars = CA_VARS.iter().map(|v| format!("{v}={CA_PATH}")).collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(dockerfile.len() + 512);
    for (i, line) in dockerfile.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        if after.contains(&i) {
            out.push_str(&format!("LABEL {SCOPE_LABEL}=\"{scope}\"\n"));
            if ca {
                out.push_str(&format!("COPY {CA_FILE} {CA_PATH}\nENV {vars}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)], gz: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        let raw = b.into_inner().unwrap();
        if !gz {
            return raw;
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &raw).unwrap();
        e.finish().unwrap()
    }

    fn files_of(tar_bytes: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                (e.path().unwrap().display().to_string(), s)
            })
            .collect()
    }

    #[test]
    fn a_dockerfile_starts_with_from() {
        assert!(check_dockerfile("# syntax=docker/dockerfile:1\nARG V=1\nFROM busybox:$V\nRUN true\n").is_ok());
        assert!(check_dockerfile("RUN true\nFROM x\n").unwrap_err().contains("first instruction is RUN"));
        assert!(check_dockerfile("# nothing\n\n").unwrap_err().contains("no FROM"));
        assert!(check_dockerfile("from x").is_ok(), "keywords are case-insensitive");
    }

    #[test]
    fn every_stage_gets_its_scope_and_the_ca_bundle_after_its_from() {
        let d = "ARG B=x\nFROM $B \\\n  AS one\nRUN a\nFROM one\nRUN b \\\n FROM-not\n";
        let out = prepare(d, "ws_1", true);
        let lines: Vec<&str> = out.lines().collect();
        // After the whole first FROM (two lines, a continuation), and after the second.
        assert_eq!(lines[3], format!("LABEL {SCOPE_LABEL}=\"ws_1\""), "{out}");
        assert_eq!(lines[4], format!("COPY {CA_FILE} {CA_PATH}"), "{out}");
        assert!(lines[5].starts_with("ENV SSL_CERT_FILE=") && lines[5].contains("NODE_EXTRA_CA_CERTS="), "{out}");
        assert_eq!(lines[7], "FROM one");
        assert_eq!(lines[9], format!("COPY {CA_FILE} {CA_PATH}"));
        assert_eq!(out.matches("COPY ").count(), 2, "`FROM-not` inside a RUN is no stage: {out}");
        // Without a CA bundle, the scope still separates the cache.
        let out = prepare(d, "ws_2", false);
        assert_eq!(out.matches("LABEL ").count(), 2, "{out}");
        assert!(!out.contains("COPY "), "{out}");
    }

    #[test]
    fn the_images_a_dockerfile_names_are_found_with_their_args() {
        let d = "ARG PY=3.12\nARG BASE=python:${PY}-slim\nFROM $BASE AS build\nRUN make\n\
                 FROM --platform=linux/amd64 build\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n\
                 COPY --from=tools:1 /t /t\nFROM scratch\nCOPY --from=build /x /x\nFROM ${MISSING:-alpine}\n";
        assert_eq!(image_refs(d), Ok(vec!["python:3.12-slim".to_string(), "tools:1".into(), "alpine".into()]));
        assert!(image_refs("FROM $NOPE\n").unwrap_err().contains("`NOPE` has no default"));
        assert!(image_refs("FROM x\nARG S=y\nCOPY --from=$S /a /a\n").unwrap_err().contains("without variables"));
        assert!(image_refs("FROM ${X").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn the_builder_gets_the_clients_files_the_dockerfile_and_the_ca() {
        for gz in [false, true] {
            let ctx = tar_of(&[("app/main.py", "print(1)"), (".dockerignore", "*")], gz);
            assert_eq!(check_context(&ctx), Ok(2));
            let out = files_of(&builder_context(&ctx, "FROM x\n", "ws_1", Some(b"CERT")).unwrap());
            let get = |p: &str| out.iter().find(|(q, _)| q == p).map(|(_, s)| s.clone());
            assert_eq!(get("app/main.py").as_deref(), Some("print(1)"));
            assert_eq!(get(CA_FILE).as_deref(), Some("CERT"));
            assert!(get(DOCKERFILE_PATH).unwrap().contains("COPY .berth/ca-certificates.crt"));
            assert!(get(".dockerignore").unwrap().ends_with("!.berth/**\n"), "berth's files are never ignored");
        }
        // No context, no CA: the Dockerfile alone, with its scope.
        let out = files_of(&builder_context(&[], "FROM x\n", "ws_1", None).unwrap());
        let want = format!("FROM x\nLABEL {SCOPE_LABEL}=\"ws_1\"\n");
        assert_eq!(out, vec![(DOCKERFILE_PATH.to_string(), want)]);
    }

    #[test]
    fn long_names_links_and_dotted_paths_survive_the_repacking() {
        let long = format!("{}/deep.txt", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"deep"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "shortcut", &long).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "./.dockerignore", &b"*"[..]).unwrap();
        let ctx = b.into_inner().unwrap();

        let out = builder_context(&ctx, "FROM x\n", "ws_1", None).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            seen.push((path, link, text));
        }
        assert_eq!(seen[0], (long.clone(), None, "deep".to_string()), "a long name is kept whole");
        assert_eq!(seen[1], ("shortcut".to_string(), Some(long), String::new()), "so is a long link target");
        assert_eq!(seen[2].0, ".dockerignore");
        assert!(seen[2].2.ends_with("!.berth/**\n"), "`./.dockerignore` is amended too: {:?}", seen[2]);
    }

    #[test]
    fn a_bad_context_is_refused_with_its_reason() {
        assert!(check_context(b"not a tar at all, just some text that is long enough").is_err());
        let own = tar_of(&[(".berth/Dockerfile", "FROM evil")], false);
        assert!(check_context(&own).unwrap_err().contains("berth's own"));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        // `append_data` refuses `..`; write the name straight into the header.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let climbing = b.into_inner().unwrap();
        assert!(check_context(&climbing).unwrap_err().contains("climbs out"));
    }
}
