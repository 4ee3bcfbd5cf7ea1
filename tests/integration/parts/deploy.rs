//! The three descriptions of the API agree: the routes table of the contract
//! (`docs/contract.md`), the HTTP API events of `template.yaml` and the `cargo lambda watch`
//! router in the workspace `Cargo.toml` name the same (method, path, function) routes; and the function
//! crates under `functions/`, the functions of the template and the functions of the contract are the
//! same set. No AWS, no network: the files are only read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

/// (method, path, function), e.g. ("GET", "/api/integrations/{id}", "integrations").
pub(super) type Route = (String, String, String);

const CONTRACT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contract.md");
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

pub(super) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

pub(super) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn contract_text() -> String {
    read(Path::new(CONTRACT))
}

/// Splits a Markdown table row on the `|` that are not escaped as `\|`.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// The (method, path) pairs of a "method and path" cell: backticked paths, each taking the methods
/// written before it (`GET / PUT / DELETE `/a``, `GET `/a`, `/b``, `GET `/a`, GET `/b``). A query
/// string is not part of the route.
fn method_paths(cell: &str) -> Vec<(String, String)> {
    let mut methods: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, part) in cell.split('`').enumerate() {
        if i % 2 == 0 {
            let found: Vec<String> = part
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|w| METHODS.contains(w))
                .map(str::to_owned)
                .collect();
            if !found.is_empty() {
                methods = found;
            }
        } else {
            let path = part.split('?').next().unwrap_or_default().trim();
            assert!(
                path.starts_with('/') && !methods.is_empty(),
                "contract routes table: cannot read `{cell}` (a path must follow its methods)"
            );
            out.extend(methods.iter().map(|m| (m.clone(), path.to_owned())));
        }
    }
    out
}

/// The contract's routes, and every function its routes table names (the scheduled one included).
pub(super) fn contract_routes() -> (BTreeSet<Route>, BTreeSet<String>) {
    let text = contract_text();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Routes"))
        .expect("the contract has a `## Routes` section");
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .skip(2) // header and separator
        .map(cells)
        .collect();
    assert!(!rows.is_empty(), "the contract's routes table has no rows");

    let mut routes = BTreeSet::new();
    let mut functions = BTreeSet::new();
    let mut previous: Vec<String> = Vec::new();
    for row in &rows {
        let (what, function) = (&row[0], &row[1]);
        let pairs = method_paths(what);
        // "same two": the functions of the two rows above, in order, one per path.
        let names: Vec<String> = if function == "same two" {
            assert!(
                previous.len() >= 2 && pairs.len() == 2,
                "contract routes table: cannot read the `same two` row `{what}`"
            );
            previous[previous.len() - 2..].to_vec()
        } else {
            assert!(
                !function.is_empty()
                    && function.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "contract routes table: `{function}` is not a function name"
            );
            vec![function.clone(); pairs.len().max(1)]
        };
        functions.extend(names.iter().cloned());
        for (i, (method, path)) in pairs.into_iter().enumerate() {
            let name = if names.len() == 1 {
                &names[0]
            } else {
                &names[i]
            };
            routes.insert((method, path, name.clone()));
        }
        previous.push(names[0].clone());
    }
    (routes, functions)
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_mapping().and_then(|m| m.get(key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| get(v, key))
        .and_then(Value::as_str)
}

/// A function property as deployed: the function's own, else `Globals.Function`'s.
fn effective<'a>(template: &'a Value, function: &'a Value, key: &str) -> Option<&'a Value> {
    get(function, "Properties")
        .and_then(|p| get(p, key))
        .or_else(|| {
            get(template, "Globals").and_then(|g| get(g, "Function")?.as_mapping()?.get(key))
        })
}

/// A template function: its binary (crate), its HTTP API routes and its other event types.
pub(super) struct TemplateFunction {
    logical_id: String,
    pub(super) binary: String,
    pub(super) routes: Vec<(String, String)>,
    other_events: Vec<String>,
}

pub(super) fn template() -> (Value, Vec<TemplateFunction>) {
    let path = workspace().join("template.yaml");
    let template: Value = serde_norway::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let resources = get(&template, "Resources")
        .and_then(Value::as_mapping)
        .expect("template.yaml has Resources");
    let mut functions = Vec::new();
    for (id, resource) in resources {
        if str_at(resource, &["Type"]) != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().expect("logical ids are strings").to_owned();
        assert_eq!(
            str_at(resource, &["Metadata", "BuildMethod"]),
            Some("rust-cargolambda"),
            "{id}: Metadata.BuildMethod must be rust-cargolambda"
        );
        let binary = str_at(resource, &["Metadata", "BuildProperties", "Binary"])
            .unwrap_or_else(|| panic!("{id}: Metadata.BuildProperties.Binary names its crate"))
            .to_owned();
        let mut routes = Vec::new();
        let mut other_events = Vec::new();
        let events = get(resource, "Properties")
            .and_then(|p| get(p, "Events"))
            .and_then(Value::as_mapping);
        for (name, event) in events.into_iter().flatten() {
            let kind = str_at(event, &["Type"]).unwrap_or_default();
            if kind != "HttpApi" {
                other_events.push(kind.to_owned());
                continue;
            }
            let props = get(event, "Properties")
                .unwrap_or_else(|| panic!("{id}.{name:?}: an HttpApi event needs Properties"));
            let api = get(props, "ApiId").and_then(|v| match v {
                Value::Tagged(t) if t.tag == "Ref" => t.value.as_str(),
                _ => None,
            });
            assert_eq!(
                api,
                Some("HttpApi"),
                "{id}.{name:?}: every route belongs to the one HttpApi (ApiId: !Ref HttpApi)"
            );
            let method = str_at(props, &["Method"])
                .unwrap_or_else(|| panic!("{id}.{name:?}: Method"))
                .to_ascii_uppercase();
            let path = str_at(props, &["Path"])
                .unwrap_or_else(|| panic!("{id}.{name:?}: Path"))
                .to_owned();
            routes.push((method, path));
        }
        functions.push(TemplateFunction {
            logical_id: id,
            binary,
            routes,
            other_events,
        });
    }
    (template, functions)
}

/// `[workspace.metadata.lambda.watch.router]`: path = [{ method, function }, ...].
pub(super) fn router_routes() -> BTreeSet<Route> {
    let manifest: toml::Table =
        toml::from_str(&read(&workspace().join("Cargo.toml"))).expect("Cargo.toml is TOML");
    let router = ["workspace", "metadata", "lambda", "watch", "router"]
        .iter()
        .try_fold(&toml::Value::Table(manifest), |v, key| v.get(key))
        .and_then(toml::Value::as_table)
        .expect("Cargo.toml has [workspace.metadata.lambda.watch.router]")
        .clone();
    let mut routes = BTreeSet::new();
    for (path, entry) in router {
        let entries = entry.as_array().unwrap_or_else(|| {
            panic!(
                "router `{path}`: give its methods ([{{ method = \"GET\", function = \"...\" }}]) so the \
                 local router answers exactly what API Gateway does"
            )
        });
        for e in entries {
            let field = |k: &str| {
                e.get(k)
                    .and_then(toml::Value::as_str)
                    .unwrap_or_else(|| panic!("router `{path}`: every entry has a `{k}`"))
                    .to_owned()
            };
            routes.insert((
                field("method").to_ascii_uppercase(),
                path.clone(),
                field("function"),
            ));
        }
    }
    routes
}

/// The function crates: directories of `functions/` with a Cargo.toml, by package name, each with
/// one binary of the same name (what `cargo lambda build --bin` and SAM's `Binary` name).
fn function_crates() -> BTreeSet<String> {
    let dir = workspace().join("functions");
    let mut crates = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("functions/ exists") {
        let manifest = entry
            .expect("readable functions/")
            .path()
            .join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let table: toml::Table = toml::from_str(&read(&manifest)).expect("Cargo.toml is TOML");
        let name = table["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        let bins: Vec<&str> = table
            .get("bin")
            .and_then(toml::Value::as_array)
            .map(|b| b.iter().filter_map(|b| b.get("name")?.as_str()).collect())
            .unwrap_or_else(|| vec![name.as_str()]);
        assert_eq!(
            bins,
            [name.as_str()],
            "{}: one binary named like the package",
            manifest.display()
        );
        crates.insert(name);
    }
    crates
}

pub(super) fn assert_same<T: Ord + std::fmt::Debug + Clone>(
    what: &str,
    (a_name, a): (&str, &BTreeSet<T>),
    (b_name, b): (&str, &BTreeSet<T>),
) {
    let only_a: Vec<_> = a.difference(b).cloned().collect();
    let only_b: Vec<_> = b.difference(a).cloned().collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what} differ.\n  only in {a_name}: {only_a:#?}\n  only in {b_name}: {only_b:#?}"
    );
}

#[test]
fn contract_template_and_local_router_have_the_same_routes() {
    let (contract, _) = contract_routes();
    let (_, functions) = template();
    let template: BTreeSet<Route> = functions
        .iter()
        .flat_map(|f| {
            f.routes
                .iter()
                .map(|(m, p)| (m.clone(), p.clone(), f.binary.clone()))
        })
        .collect();
    let router = router_routes();

    // The table as read, spelled out: if the contract gained or lost a route on purpose, change the count.
    assert_eq!(
        contract.len(),
        19,
        "the contract's routes table should expand to 18 routes; read: {contract:#?}"
    );
    assert_same(
        "routes",
        ("the contract", &contract),
        ("template.yaml", &template),
    );
    assert_same(
        "routes",
        ("the contract", &contract),
        ("the Cargo.toml router", &router),
    );
    // Nothing is routed twice in the template (one (method, path) per route).
    let pairs: BTreeSet<_> = template.iter().map(|(m, p, _)| (m, p)).collect();
    assert_eq!(pairs.len(), template.len(), "a route is declared twice");
}

#[test]
fn every_function_crate_is_in_the_template_and_the_contract() {
    let crates = function_crates();
    let (template, functions) = template();
    let deployed: BTreeSet<String> = functions.iter().map(|f| f.binary.clone()).collect();
    assert_eq!(
        deployed.len(),
        functions.len(),
        "two template functions build the same binary"
    );
    assert_same(
        "functions",
        ("functions/", &crates),
        ("template.yaml", &deployed),
    );
    let (_, named) = contract_routes();
    assert_same(
        "functions",
        ("functions/", &crates),
        ("the contract's routes table", &named),
    );

    for f in &functions {
        let resource = &template["Resources"][f.logical_id.as_str()];
        let prop = |key: &str| effective(&template, resource, key);
        let id = &f.logical_id;
        assert_eq!(
            prop("Runtime").and_then(Value::as_str),
            Some("provided.al2023"),
            "{id}: Runtime"
        );
        assert_eq!(
            prop("Handler").and_then(Value::as_str),
            Some("bootstrap"),
            "{id}: Handler"
        );
        assert_eq!(
            prop("CodeUri").and_then(Value::as_str),
            Some("."),
            "{id}: CodeUri"
        );
        let arch: Vec<&str> = prop("Architectures")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(arch, ["arm64"], "{id}: Architectures");
        let timeout = prop("Timeout").and_then(Value::as_u64).unwrap_or(3);
        if f.routes.is_empty() {
            // The scheduled function and the queue's worker: no route, a schedule or the SQS event
            // source, at most Lambda's 15 minutes.
            assert!(
                f.other_events
                    .iter()
                    .any(|e| e.starts_with("Schedule") || e == "SQS"),
                "{id}: a function without routes runs on a schedule or a queue"
            );
            assert!(timeout <= 900, "{id}: Timeout {timeout} s");
        } else {
            // API Gateway gives up after 30 s.
            assert!(
                timeout <= 29,
                "{id}: Timeout {timeout} s is over API Gateway's limit"
            );
        }
    }
}

/// The repository's files: what git tracks, else every file outside `.git`, `target` and `.dev`.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let tracked = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    if let Some(out) = tracked {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if [".git", "target", ".dev"].iter().any(|n| name == *n) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// `base` joined with a relative path, `..` and `.` resolved without touching the disk.
fn lexical_join(base: &Path, relative: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out
}

/// The project began next to an outer folder `shared/` (its documents and seed data, in `docs/` and
/// `seeds/` there) that a clone of the repository does not have: nothing may point at it. A relative
/// path through `../` is fine when it lands inside the repository (fuzz/Cargo.toml names the crates of
/// `shared/` that way).
#[test]
fn no_file_refers_to_the_folder_outside_the_repository() {
    let root = workspace();
    // Spelled in pieces, so this file does not name what it looks for.
    let outer: Vec<String> = ["docs", "seeds"]
        .iter()
        .map(|d| format!("shared/{d}"))
        .collect();
    let up = format!("..{}", "/");
    let mut offences = Vec::new();
    let files = repository_files(&root);
    assert!(files.len() > 50, "found only {} files", files.len());
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // not text
        };
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let dir = file.parent().unwrap_or(&root);
        for (n, line) in text.lines().enumerate() {
            if outer.iter().any(|o| line.contains(o.as_str())) {
                offences.push(format!("{shown}:{}: {line}", n + 1));
                continue;
            }
            // Every `../…/shared/<name>` resolves inside the repository, to something that exists.
            let mut rest = line;
            while let Some(at) = rest.find(&format!("{up}shared/")) {
                let mut start = at;
                while rest[..start].ends_with(&up) {
                    start -= up.len();
                }
                let tail = &rest[start..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "./_-".contains(c)))
                    .unwrap_or(tail.len());
                let relative = tail[..end].trim_end_matches(['.', '/']);
                let target = lexical_join(dir, relative);
                if !target.starts_with(&root) || !target.exists() {
                    offences.push(format!(
                        "{shown}:{}: `{relative}` is outside the repository",
                        n + 1
                    ));
                }
                rest = &rest[at + up.len()..];
            }
        }
    }
    assert!(
        offences.is_empty(),
        "files refer to the folder outside the repository (a clone has no such folder):\n{}",
        offences.join("\n")
    );
}
