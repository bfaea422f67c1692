//! Tidy rules: the workspace's layout is a rule, not an accident. Each rule is one test, and
//! each exception is a named entry with a reason in a table below (an entry that no longer
//! matches anything fails too, so the tables only shrink).
//!
//! 1. Dependency direction (`RULES`): a crate depends, in `[dependencies]`,
//!    `[build-dependencies]` and `[dev-dependencies]`, only on the workspace crates its row
//!    allows, and only crates allowed to may use tokio. Every workspace member needs a row.
//! 2. Pure modules stay pure (`PURE`): no runtime, sockets, files, clock or environment.
//! 3. Every `.rs` file under a member's `src/`, `tests/`, `benches/` and `e2e/` opens with a
//!    `//!` header (`MISSING_HEADER` lists the exceptions).
//! 4. Library code reads no environment variables, never prints with `eprintln!` and never
//!    exits or aborts the process (`ENV_AND_EXIT_ALLOWED` lists the edges).
//! 5. No `.rs` file is longer than `MAX_LINES` (`LONG_FILES` lists the exceptions).
//! 6. No import cycle between the files of a crate (`KNOWN_CYCLES` lists the exceptions).
//!
//! Rules 2, 4 and 6 skip `//` comment lines and everything after a module-level
//! `#[cfg(test)]`. Manifests are read with just enough TOML for ours, and the scanners match
//! text, not syntax: rule 6 follows `crate::` and `super::` paths (`{...}` groups too), not
//! bare relative ones, so a `mod.rs` naming its children is no cycle with them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// In `RULES`: any workspace crate.
const ANY: &[&str] = &["*"];

/// (crate directory, workspace crates its `[dependencies]` and `[build-dependencies]` may name,
/// the further ones its `[dev-dependencies]` may name, may it use tokio)
#[rustfmt::skip]
const RULES: &[(&str, &[&str], &[&str], bool)] = &[
    ("catalog", &[], &[], false),
    ("planner", &["skyx-catalog"], &[], false),
    ("protocol", &[], &[], false),
    ("store", &[], &[], true),
    // A job tells its agents how to reach each end's store (`skyx_store::StoreConfig`).
    ("agent-api", &["skyx-protocol", "skyx-store"], &[], true),
    // copy_through_relay drives a real copy through the gateway (which depends on the agent).
    // It offers itself as an in-process provider (`in_process`) for the gateway's tests.
    ("transfer-agent", &["skyx-protocol", "skyx-agent-api", "skyx-store", "skyx-provision"],
        &["skyx-gateway"], true),
    ("provision", &["skyx-agent-api"], &[], true),
    // The gateway speaks to agents through their contract only, never the daemon's code.
    // Its tests run real agents in-process (`skyx_agent::in_process`).
    ("gateway", &["skyx-protocol", "skyx-planner", "skyx-catalog", "skyx-store",
        "skyx-agent-api", "skyx-provision"], &["skyx-transfer-agent"], true),
    // Local stage compute runs the agent's own stage runner (`skyx_agent::stage`).
    // Its hooks ask the planners (catalog, planner, pipeline) for routes and re-plans.
    ("pipeline-run", &["skyx-pipeline", "skyx-gateway", "skyx-provision", "skyx-agent-api",
        "skyx-transfer-agent", "skyx-store", "skyx-catalog", "skyx-planner"], &[], true),
    // The sky builds namespaces and starts servers with plain processes: no runtime needed.
    ("sky", &["skyx-catalog"], &[], false),
    // Pipeline placement is pure optimisation, like the planner.
    ("pipeline", &["skyx-catalog", "skyx-planner"], &[], false),
    // The edges: binaries, benchmarks and end-to-end tests may use anything.
    ("cli", ANY, ANY, true),
    ("bench", ANY, ANY, true),
    ("tests", ANY, ANY, true),
];

/// (file or directory, tokens its code must not contain)
#[rustfmt::skip]
const PURE: &[(&str, &[&str])] = &[
    ("protocol/src", &["tokio", "std::net", "std::fs", "Instant::now", "SystemTime::now"]),
    ("planner/src", &["tokio", "std::net", "std::env"]),
    ("pipeline/src", &["tokio", "std::net", "std::env", "std::fs", "Instant::now",
        "SystemTime::now"]),
    ("gateway/src/core", &["tokio", "std::net", "std::fs", "std::env", "Instant::now",
        "SystemTime::now"]),
    ("gateway/src/sync/merge.rs", &["tokio", "std::net", "std::fs", "std::env",
        "Instant::now", "SystemTime::now", "ObjectStore"]),
    ("pipeline-run/src/ray/jobs.rs", &["tokio", "std::net", "std::fs", "std::env",
        "Instant::now", "SystemTime::now", "reqwest"]),
    ("pipeline-run/src/ray/cluster.rs", &["tokio", "std::net", "std::fs", "std::env",
        "std::process", "Instant::now", "SystemTime::now", "reqwest"]),
];

/// (file, reason) for files without a `//!` header.
const MISSING_HEADER: &[(&str, &str)] = &[];

/// The members whose `src/` is not library code.
const EDGE_CRATES: &[&str] = &["cli", "bench", "tests"];

/// What library code must not do: read the environment, print to stderr, end the process.
#[rustfmt::skip]
const ENV_AND_EXIT: &[&str] = &[
    "std::env::var", "env::var(", "env::var_os(", "std::env::vars",
    "eprintln!", "process::exit", "process::abort",
];

/// (file, reason) for library files that may read the environment, print or exit.
#[rustfmt::skip]
const ENV_AND_EXIT_ALLOWED: &[(&str, &str)] = &[
    ("transfer-agent/src/daemon.rs", "edge: the agent daemon's entry point (skyx-agent, \
        `skyx agent`): job token and SKYX_FAULT_* from the environment, fatal errors to stderr"),
    ("provision/src/local.rs", "named config constructor: LocalProvider::default_program \
        (SKYX_AGENT_BIN, else the running binary)"),
    ("store/src/lib.rs", "named config constructor: StoreConfig::from_env"),
    ("sky/src/machine.rs", "named config constructor: Tools::from_env (SKYX_TOOLS_DIR, HOME)"),
];

/// The most lines a `.rs` file may have.
const MAX_LINES: usize = 800;

/// (file, reason) for files over `MAX_LINES`.
#[rustfmt::skip]
const LONG_FILES: &[(&str, &str)] = &[
];

/// (the files importing each other in a cycle, as the failure names them; reason)
#[rustfmt::skip]
const KNOWN_CYCLES: &[(&str, &str)] = &[];

#[test]
fn library_crates_depend_only_in_the_allowed_direction() {
    let root = root();
    let members = members(&root);
    let crates: Vec<String> = members.iter().map(|m| package_name(&root, m)).collect();
    let mut problems = Vec::new();
    for m in &members {
        if !RULES.iter().any(|row| row.0 == m.as_str()) {
            problems.push(format!(
                "Cargo.toml: member `{m}` has no row in RULES: add one"
            ));
        }
    }
    for (dir, normal, dev, tokio_ok) in RULES {
        if !members.iter().any(|m| m.as_str() == *dir) {
            problems.push(format!("RULES: `{dir}` is not a workspace member"));
            continue;
        }
        for name in normal.iter().chain(dev.iter()) {
            if *name != "*" && !crates.iter().any(|c| c.as_str() == *name) {
                problems.push(format!(
                    "RULES: `{dir}` allows `{name}`, no workspace crate"
                ));
            }
        }
        let manifest = format!("{dir}/Cargo.toml");
        for (name, kind, line) in dependencies(&read(&root.join(&manifest))) {
            let may = |list: &[&str]| list.contains(&"*") || list.contains(&name.as_str());
            let allowed = may(normal) || (kind == "dev-dependencies" && may(dev));
            let at = format!("{manifest}:{line}: [{kind}] {name}");
            if crates.contains(&name) && !allowed {
                let also = format!("(dev-dependencies also {dev:?})");
                problems.push(format!("{at}: {dir} may use only {normal:?} {also}"));
            }
            if !tokio_ok && (name == "tokio" || name.starts_with("tokio-")) {
                problems.push(format!("{at}: {dir} must stay free of an async runtime"));
            }
        }
    }
    assert_clean("dependency direction (RULES)", &problems);
}

#[test]
fn manifest_parser_reads_every_dependency_form() {
    let manifest = r#"
        [package]
        name = "x"
        [dependencies]
        a.workspace = true
        b = "1"
        c = { version = "1", features = ["f"] }
        alias = { package = "skyx-d", path = "../d" }
        [dependencies.e]
        workspace = true
        [dev-dependencies]
        f = "1"
        [target.'cfg(unix)'.build-dependencies]
        g = "1"
        [[bin]]
        name = "h"
    "#;
    let got: Vec<String> = dependencies(manifest)
        .iter()
        .map(|(name, kind, _)| format!("{kind}:{name}"))
        .collect();
    let deps = ["a", "b", "c", "skyx-d", "e"].map(|d| format!("dependencies:{d}"));
    let mut want = deps.to_vec();
    want.extend(["dev-dependencies:f", "build-dependencies:g"].map(str::to_string));
    assert_eq!(got, want);
}

#[test]
fn pure_modules_stay_pure() {
    let root = root();
    let mut problems = Vec::new();
    for (place, forbidden) in PURE {
        let files = rs_files(&root.join(place));
        if files.is_empty() {
            problems.push(format!("PURE: no .rs file at `{place}`"));
        }
        for path in files {
            let text = read(&path);
            for (n, line) in code_lines(&text) {
                if let Some(token) = forbidden.iter().find(|t| line.contains(**t)) {
                    let file = rel(&root, &path);
                    problems.push(format!("{file}:{n}: `{token}` in {place}, which is pure"));
                }
            }
        }
    }
    assert_clean("pure modules stay pure (PURE)", &problems);
}

#[test]
fn every_rust_file_opens_with_a_module_header() {
    let root = root();
    let mut found = Vec::new();
    for m in members(&root) {
        for dir in ["src", "tests", "benches", "e2e"] {
            for path in rs_files(&root.join(&m).join(dir)) {
                let text = read(&path);
                let first = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
                let (n, line) = first.unwrap_or((0, ""));
                if !line.trim_start().starts_with("//!") {
                    let file = rel(&root, &path);
                    let problem = format!("{file}:{}: `{line}` before any `//!`", n + 1);
                    found.push((file, problem));
                }
            }
        }
    }
    assert_allowed(
        "a //! header opens every file (MISSING_HEADER)",
        MISSING_HEADER,
        &found,
    );
}

#[test]
fn library_code_reads_no_environment_and_never_exits() {
    let root = root();
    let mut found = Vec::new();
    for m in members(&root) {
        if EDGE_CRATES.contains(&m.as_str()) {
            continue;
        }
        for path in rs_files(&root.join(&m).join("src")) {
            let file = rel(&root, &path);
            if file.starts_with(&format!("{m}/src/bin/")) || file == format!("{m}/src/main.rs") {
                continue;
            }
            let text = read(&path);
            for (n, line) in code_lines(&text) {
                if let Some(token) = ENV_AND_EXIT.iter().find(|t| line.contains(**t)) {
                    let problem = format!("{file}:{n}: `{token}` in library code");
                    found.push((file.clone(), problem));
                }
            }
        }
    }
    let rule = "library code reads no env, never exits (ENV_AND_EXIT_ALLOWED)";
    assert_allowed(rule, ENV_AND_EXIT_ALLOWED, &found);
}

/// The only file that may hold `unsafe` code, and why.
const UNSAFE_ALLOWED: &[(&str, &str)] = &[(
    "sky/src/delay_line.rs",
    "the delay line attaches to TUN devices: setns, the TUNSETIFF ioctl, raw reads and writes",
)];

#[test]
fn unsafe_code_lives_only_where_it_is_allowed() {
    let root = root();
    let mut found = Vec::new();
    for path in rs_files(&root) {
        let file = rel(&root, &path);
        if file.starts_with("tests/e2e/tidy.rs") {
            continue;
        }
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            if line.contains("unsafe {") || line.contains("allow(unsafe_code)") {
                found.push((file.clone(), format!("{file}:{n}: unsafe code")));
            }
        }
    }
    // Every other crate keeps the workspace's lints, which forbid it.
    for m in members(&root) {
        let manifest = read(&root.join(&m).join("Cargo.toml"));
        if !manifest.contains("[lints]\nworkspace = true") {
            found.push((
                format!("{m}/Cargo.toml"),
                format!("{m}/Cargo.toml: not on the workspace's lints"),
            ));
        }
    }
    let allowed: Vec<(&str, &str)> = UNSAFE_ALLOWED
        .iter()
        .copied()
        .chain([(
            "sky/Cargo.toml",
            "denies unsafe_code so its delay line may allow it",
        )])
        .collect();
    assert_allowed(
        "unsafe code only where allowed (UNSAFE_ALLOWED)",
        &allowed,
        &found,
    );
}

#[test]
fn rust_files_stay_within_the_length_budget() {
    let root = root();
    let mut found = Vec::new();
    for path in rs_files(&root) {
        let lines = read(&path).lines().count();
        if lines > MAX_LINES {
            let file = rel(&root, &path);
            let problem = format!("{file}: {lines} lines, over {MAX_LINES}: split it");
            found.push((file, problem));
        }
    }
    assert_allowed("file length budget (LONG_FILES)", LONG_FILES, &found);
}

#[test]
fn no_import_cycle_between_the_files_of_a_crate() {
    let root = root();
    let mut found = Vec::new();
    for m in members(&root) {
        let src = root.join(&m).join("src");
        let has_lib = src.join("lib.rs").exists();
        // Paths relative to src/; src/bin/* and a main.rs beside a lib.rs are other crates.
        let files: Vec<String> = rs_files(&src)
            .iter()
            .map(|p| rel(&src, p))
            .filter(|f| !(f.starts_with("bin/") || (has_lib && f.as_str() == "main.rs")))
            .collect();
        let edges = import_edges(&src, &files);
        for cycle in cycles(&edges, files.len()) {
            let names: Vec<String> = cycle
                .iter()
                .map(|&i| format!("{m}/src/{}", files[i]))
                .collect();
            let links: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| cycle.contains(a) && cycle.contains(b))
                .map(|((a, b), n)| format!("{m}/src/{}:{n} -> {}", files[*a], files[*b]))
                .collect();
            let (names, links) = (names.join(" "), links.join(", "));
            found.push((
                names.clone(),
                format!("`{names}` import each other: {links}"),
            ));
        }
    }
    assert_allowed(
        "no import cycle within a crate (KNOWN_CYCLES)",
        KNOWN_CYCLES,
        &found,
    );
}

#[test]
fn import_scanner_follows_groups_and_super() {
    let code = "use crate::{x::Y, z};\nuse super::c::D;\nlet v = crate::w::f();";
    let got: Vec<String> = module_refs(code, &["a".to_string(), "b".to_string()])
        .iter()
        .map(|(n, path)| format!("{n}:{}", path.join("::")))
        .collect();
    assert_eq!(got, ["1:x::Y", "1:z", "3:w::f", "2:a::c::D"]);
}

/// Fails for each `(file, problem)` found whose file `allowed` does not list, and for each
/// entry of `allowed` that matches nothing found any more.
fn assert_allowed(rule: &str, allowed: &[(&str, &str)], found: &[(String, String)]) {
    let mut problems: Vec<String> = found
        .iter()
        .filter(|(file, _)| !allowed.iter().any(|(path, _)| *path == file.as_str()))
        .map(|(_, problem)| problem.clone())
        .collect();
    for (path, _) in allowed {
        if !found.iter().any(|(file, _)| file.as_str() == *path) {
            problems.push(format!("`{path}` breaks no rule now: unlist it"));
        }
    }
    assert_clean(rule, &problems);
}

/// Fails listing `problems`, if any, under the rule's name.
fn assert_clean(rule: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "tidy rule `{rule}` broken (tables in tests/e2e/tidy.rs):\n  {}",
        problems.join("\n  ")
    );
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `path` relative to `base`, with `/` separators.
fn rel(base: &Path, path: &Path) -> String {
    let path = path.strip_prefix(base).unwrap_or(path);
    path.to_string_lossy().replace('\\', "/")
}

/// The `.rs` files under `dir` (none if it does not exist), skipping `target/` and dot dirs.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    if dir.extension().is_some_and(|e| e == "rs") && dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                out.extend(rs_files(&path));
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// (line number, line) of the code: no comment lines, nothing after `#[cfg(test)]`.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim_end() != "#[cfg(test)]")
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(i, line)| (i + 1, line))
        .collect()
}

/// The workspace members, from the root manifest's `[workspace] members = [...]`.
fn members(root: &Path) -> Vec<String> {
    let list = toml_value(&read(&root.join("Cargo.toml")), "workspace", "members");
    let members: Vec<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    assert!(!members.is_empty(), "no [workspace] members read");
    assert!(!list.contains('*'), "no member globs, please");
    members
}

/// The `[package] name` of the member in `dir`.
fn package_name(root: &Path, dir: &str) -> String {
    let manifest = read(&root.join(dir).join("Cargo.toml"));
    let name = toml_value(&manifest, "package", "name");
    name.trim_matches('"').to_string()
}

/// The raw value of `key` in `[section]` of a manifest (a multi-line array joined), or "".
fn toml_value(manifest: &str, section: &str, key: &str) -> String {
    let (mut here, mut value) = (false, None::<String>);
    for line in manifest.lines().map(str::trim) {
        if let Some(value) = &mut value {
            value.push_str(line);
        } else if line.starts_with('[') {
            here = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) == Some(section);
        } else if here
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            value = Some(v.trim().to_string());
        }
        if let Some(v) = &value
            && (!v.starts_with('[') || v.contains(']'))
        {
            break;
        }
    }
    value.unwrap_or_default()
}

/// (name, kind: `dependencies`, `dev-dependencies` or `build-dependencies`, line)
type Dep = (String, &'static str, usize);

/// Every dependency of a manifest: `name.workspace = true`, `name = "1"`, `name = { ... }`
/// (under its `package` name if renamed) and `[dependencies.name]`, in any dependency table.
fn dependencies(manifest: &str) -> Vec<Dep> {
    let mut out: Vec<Dep> = Vec::new();
    // The dependency table being read: its kind, and whether it is one `[kind.name]` table.
    let mut table: Option<(&'static str, bool)> = None;
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            table = None;
            let header = line.trim_start_matches('[').split(']').next().unwrap_or("");
            if !line.starts_with("[[")
                && let Some((kind, name)) = dep_table(header.trim())
            {
                if let Some(name) = &name {
                    out.push((name.clone(), kind, n + 1));
                }
                table = Some((kind, name.is_some()));
            }
            continue;
        }
        match table {
            Some((kind, false)) => {
                if let Some(key) = dep_key(line) {
                    let renamed = line.split_once('{').and_then(|(_, rest)| package_key(rest));
                    out.push((renamed.unwrap_or(key), kind, n + 1));
                }
            }
            Some((_, true)) if line.starts_with("package") => {
                if let (Some(dep), Some(real)) = (out.last_mut(), package_key(line)) {
                    dep.0 = real;
                }
            }
            _ => {}
        }
    }
    out
}

/// The kind of a dependency table header (`dependencies`, `target.'cfg(..)'.dev-dependencies`,
/// ...), and the dependency's name for a `[kind.name]` header.
fn dep_table(header: &str) -> Option<(&'static str, Option<String>)> {
    let rest = match header.strip_prefix("target.") {
        None => header,
        Some(target) => {
            let end = match target.chars().next() {
                Some(quote @ ('\'' | '"')) => target[1..].find(quote)? + 2,
                _ => target.find('.')?,
            };
            target[end..].trim_start_matches('.')
        }
    };
    let (key, name) = match rest.split_once('.') {
        Some((key, name)) => (key, Some(name.trim_matches(['"', '\'']).to_string())),
        None => (rest, None),
    };
    let kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    Some((kinds.into_iter().find(|kind| *kind == key)?, name))
}

/// The dependency named by a line of a dependency table, if it names one.
fn dep_key(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.split_once('.').map_or(key, |(name, _)| name);
    let key = key.trim().trim_matches(['"', '\'']);
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    (!key.is_empty() && key.chars().all(valid)).then(|| key.to_string())
}

/// The value of `package = "..."` in `text`.
fn package_key(text: &str) -> Option<String> {
    let (_, value) = text.split_once("package")?;
    let value = value.trim_start().strip_prefix('=')?;
    let value = value.trim_start().strip_prefix('"')?;
    Some(value[..value.find('"')?].to_string())
}

/// A module file's path in its crate: `lib.rs` -> [], `x.rs` and `x/mod.rs` -> [x], `x/y.rs`
/// -> [x, y].
fn module_path(file: &str) -> Vec<String> {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let mut path: Vec<String> = stem.split('/').map(str::to_string).collect();
    if stem == "lib" || stem == "main" || stem.ends_with("/mod") {
        path.pop();
    }
    path
}

/// (line, absolute module path) of every `crate::...` and `super::...` path in `code`, for a
/// file whose module path is `me`; `{a, b::c}` groups give one path each.
fn module_refs(code: &str, me: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for keyword in ["crate::", "super::"] {
        for (at, _) in code.match_indices(keyword) {
            if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut start = at + keyword.len();
            let mut base: Vec<String> = Vec::new();
            if keyword == "super::" {
                let mut up = 1;
                while code[start..].starts_with(keyword) {
                    (up, start) = (up + 1, start + keyword.len());
                }
                let Some(keep) = me.len().checked_sub(up) else {
                    continue;
                };
                base = me[..keep].to_vec();
            }
            let line = code[..at].matches('\n').count() + 1;
            let mut paths = Vec::new();
            use_paths(code, start, &base, &mut paths);
            out.extend(paths.into_iter().map(|path| (line, path)));
        }
    }
    out
}

/// The paths written at `s[start..]` (after a `::`) below `prefix`, following `{...}` groups.
fn use_paths(s: &str, start: usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let bytes = s.as_bytes();
    let (mut path, mut i) = (prefix.to_vec(), start);
    loop {
        if bytes.get(i) == Some(&b'{') {
            let (mut depth, mut item) = (0, i + 1);
            for (j, &c) in bytes.iter().enumerate().skip(i) {
                match c {
                    b'{' => depth += 1,
                    b',' | b'}' if depth == 1 => {
                        let text = s[item..j].trim();
                        if !text.is_empty() {
                            use_paths(text, 0, &path, out);
                        }
                        if c == b'}' {
                            return;
                        }
                        item = j + 1;
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let len = bytes[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        if len == 0 {
            break;
        }
        path.push(s[i..i + len].to_string());
        i += len;
        if !s[i..].starts_with("::") {
            break;
        }
        i += 2;
    }
    out.push(path);
}

/// (importer, imported) -> the first line importing, between the module `files` of `src/`.
fn import_edges(src: &Path, files: &[String]) -> BTreeMap<(usize, usize), usize> {
    let modules: BTreeMap<Vec<String>, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (module_path(f), i))
        .collect();
    let mut edges = BTreeMap::new();
    for (a, f) in files.iter().enumerate() {
        let text = read(&src.join(f));
        let mut code = vec![""; text.lines().count()];
        for (n, line) in code_lines(&text) {
            code[n - 1] = line;
        }
        for (line, path) in module_refs(&code.join("\n"), &module_path(f)) {
            // The longest prefix of the path that is a module file.
            let target = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]));
            if let Some(&b) = target
                && b != a
            {
                edges.entry((a, b)).or_insert(line);
            }
        }
    }
    edges
}

/// The strongly connected groups of more than one file in the import graph.
fn cycles(edges: &BTreeMap<(usize, usize), usize>, files: usize) -> BTreeSet<Vec<usize>> {
    let reach: Vec<BTreeSet<usize>> = (0..files)
        .map(|start| {
            let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
            while let Some(a) = todo.pop() {
                for &(_, b) in edges.keys().filter(|(from, _)| *from == a) {
                    if seen.insert(b) {
                        todo.push(b);
                    }
                }
            }
            seen
        })
        .collect();
    (0..files)
        .map(|a| {
            let mutual = |b: &usize| *b == a || (reach[a].contains(b) && reach[*b].contains(&a));
            (0..files).filter(mutual).collect::<Vec<usize>>()
        })
        .filter(|group| group.len() > 1)
        .collect()
}
