//! The layers of ARCHITECTURE.md, checked: which workspace crate may depend on which (a new edge fails
//! here, naming it), the pure crates build no async runtime or gRPC stack, and the shipped `halcyon`
//! binary links no test kit. Read from `cargo metadata` and `cargo tree`, not from a list we keep by hand
//! elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use halcyon_testkit::workspace_root;

/// Who may depend on whom (normal and build dependencies; dev-dependencies are free). Pure crates at the
/// bottom; `bus` and `projector` never see each other; the node and the review tools above both; the CLI
/// and the bench tool on top.
const ALLOWED: &[(&str, &[&str])] = &[
    ("halcyon-schema", &[]),
    ("halcyon-ledger", &[]),
    ("halcyon-policy", &["halcyon-schema"]),
    ("halcyon-timescales", &["halcyon-schema"]),
    ("halcyon-signals", &["halcyon-schema"]),
    ("halcyon-scenario", &["halcyon-schema"]),
    ("halcyon-grpc", &["halcyon-schema"]),
    ("halcyon-bus", &["halcyon-schema", "halcyon-ledger"]),
    (
        "halcyon-projector",
        &[
            "halcyon-schema",
            "halcyon-policy",
            "halcyon-timescales",
            "halcyon-signals",
        ],
    ),
    (
        "halcyon-review",
        &[
            "halcyon-schema",
            "halcyon-policy",
            "halcyon-timescales",
            "halcyon-signals",
            "halcyon-ledger",
            "halcyon-bus",
            "halcyon-projector",
        ],
    ),
    (
        "halcyon-node",
        &[
            "halcyon-schema",
            "halcyon-grpc",
            "halcyon-policy",
            "halcyon-timescales",
            "halcyon-signals",
            "halcyon-ledger",
            "halcyon-bus",
            "halcyon-projector",
        ],
    ),
    ("halcyon-testkit", &["halcyon-schema", "halcyon-scenario"]),
    (
        "halcyon-cli",
        &[
            "halcyon-schema",
            "halcyon-grpc",
            "halcyon-policy",
            "halcyon-timescales",
            "halcyon-signals",
            "halcyon-ledger",
            "halcyon-bus",
            "halcyon-projector",
            "halcyon-node",
            "halcyon-review",
            "halcyon-scenario",
        ],
    ),
    (
        "halcyon-bench",
        &[
            "halcyon-schema",
            "halcyon-timescales",
            "halcyon-signals",
            "halcyon-grpc",
            "halcyon-policy",
            "halcyon-ledger",
            "halcyon-bus",
            "halcyon-projector",
            "halcyon-node",
            "halcyon-review",
            "halcyon-cli",
            "halcyon-testkit",
        ],
    ),
    // The workspace's end-to-end tests: dev-dependencies only.
    ("halcyon-tests", &[]),
];

/// Crates that must stay pure: no I/O runtime, no network stack.
const PURE: &[&str] = &[
    "halcyon-schema",
    "halcyon-policy",
    "halcyon-timescales",
    "halcyon-signals",
    "halcyon-ledger",
];

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run cargo");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Workspace crate → its workspace dependencies of kind normal or build.
fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let metadata: serde_json::Value = serde_json::from_str(&run(cargo().args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ])))
    .unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .filter_map(|d| d["name"].as_str())
                .filter(|name| name.starts_with("halcyon-"))
                .map(str::to_owned)
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Every package in the build of `package` (normal and build dependencies), by name.
fn tree(package: &str) -> BTreeSet<String> {
    run(cargo().args([
        "tree",
        "--offline",
        "-p",
        package,
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]))
    .lines()
    .filter_map(|line| line.split_whitespace().next())
    .map(str::to_owned)
    .collect()
}

#[test]
fn workspace_crates_depend_only_along_the_allowed_directions() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(krate, deps)| (*krate, deps.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for (krate, deps) in workspace_edges() {
        let Some(may) = allowed.get(krate.as_str()) else {
            wrong.push(format!(
                "{krate} is not in the table of allowed directions (tests/tests/e2e/crate_graph.rs)"
            ));
            continue;
        };
        for dep in deps {
            if !may.contains(dep.as_str()) {
                wrong.push(format!("{krate} -> {dep} is not an allowed direction"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_bus_and_the_projector_never_see_each_other() {
    for (a, b) in [
        ("halcyon-bus", "halcyon-projector"),
        ("halcyon-projector", "halcyon-bus"),
    ] {
        assert!(!tree(a).contains(b), "{a} builds {b}");
    }
}

#[test]
fn pure_crates_build_no_runtime_or_grpc() {
    for krate in PURE {
        let built = tree(krate);
        let impure: Vec<_> = ["tokio", "tonic", "hyper", "async-nats", "sled", "h2"]
            .into_iter()
            .filter(|p| built.contains(*p))
            .collect();
        assert!(impure.is_empty(), "{krate} builds {impure:?}");
    }
}

#[test]
fn the_shipped_binary_links_no_test_kit() {
    let built = tree("halcyon-cli");
    for dev_only in ["halcyon-testkit", "halcyon-bench", "proptest"] {
        assert!(!built.contains(dev_only), "the halcyon binary links {dev_only}");
    }
}
