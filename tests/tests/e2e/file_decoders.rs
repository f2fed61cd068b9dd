//! Issue 14: every file format a node loads is decoded without panicking, whatever the input: the
//! sharing policy and its history, the timescale rules and the bank-holiday calendar, the signal rules, the
//! agency registry and the token file. Inputs are the shipped files mutated (bytes flipped, lines dropped,
//! duplicated or swapped, values replaced) and arbitrary text; each decoder must answer `Ok` or an error.

use halcyon_testkit::workspace_root;
use proptest::prelude::*;

/// A shipped file's text.
fn shipped(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap()
}

/// The text mutated: lines dropped, duplicated, swapped; a value replaced; bytes flipped.
fn mutated(text: String) -> impl Strategy<Value = String> {
    let lines = text.lines().count().max(1);
    (
        proptest::collection::vec((0..6u8, 0..lines, 0..lines, any::<u8>(), ".{0,12}"), 1..8),
        Just(text),
    )
        .prop_map(|(edits, text)| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            for (op, a, b, byte, replacement) in edits {
                if lines.is_empty() {
                    break;
                }
                let (a, b) = (a % lines.len(), b % lines.len());
                match op {
                    0 => {
                        lines.remove(a);
                    }
                    1 => {
                        let line = lines[a].clone();
                        lines.insert(b, line);
                    }
                    2 => lines.swap(a, b),
                    3 => {
                        // Replace what follows `=` on the line.
                        if let Some(i) = lines[a].find('=') {
                            lines[a].truncate(i + 1);
                            lines[a].push_str(&replacement);
                        }
                    }
                    4 => {
                        let mut bytes = lines[a].clone().into_bytes();
                        if !bytes.is_empty() {
                            let i = b % bytes.len();
                            bytes[i] ^= byte;
                        }
                        lines[a] = String::from_utf8_lossy(&bytes).into_owned();
                    }
                    _ => lines[a].push_str(&replacement),
                }
            }
            lines.join("\n")
        })
}

fn decode_all(src: &str) {
    let _ = halcyon_policy::Policy::from_toml(src, "policy.toml");
    let _ = halcyon_policy::PolicyHistory::from_toml(src, "history.toml", |_| {
        halcyon_policy::Policy::from_toml(src, "policy.toml")
    });
    let _ = halcyon_timescales::RuleSet::from_toml(src, "timescales.toml");
    let _ = halcyon_timescales::Calendar::from_toml(src, "bank-holidays.toml");
    let _ = halcyon_signals::SignalRules::from_toml(src, "signals.toml");
    let registry = halcyon_schema::Registry::from_toml(src);
    let agencies = halcyon_schema::Registry::from_toml(&shipped("deploy/agencies.toml")).unwrap();
    let _ = halcyon_node::auth::Tokens::from_toml(src, &agencies);
    if let Ok(registry) = registry {
        let _ = halcyon_node::auth::Tokens::from_toml(&shipped("deploy/tokens.toml"), &registry);
    }
}

const FILES: &[&str] = &[
    "deploy/policy/england.toml",
    "deploy/policy/history.toml",
    "deploy/timescales/england.toml",
    "deploy/timescales/local-example.toml",
    "deploy/timescales/bank-holidays-england-and-wales.toml",
    "deploy/signals.toml",
    "deploy/agencies.toml",
    "deploy/tokens.toml",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_shipped_files_never_panic_a_decoder(
        src in (0..FILES.len()).prop_flat_map(|i| mutated(shipped(FILES[i])))
    ) {
        decode_all(&src);
    }

    #[test]
    fn arbitrary_text_never_panics_a_decoder(src in "\\PC{0,400}") {
        decode_all(&src);
    }

    #[test]
    fn toml_shaped_noise_never_panics_a_decoder(
        src in proptest::collection::vec(
            prop_oneof![
                "\\[\\[?[a-z_.]{1,12}\\]\\]?",
                "[a-z_]{1,12} = (\"[^\"\\n]{0,10}\"|[0-9-]{1,6}|\\[\"[a-z0-9-]{0,8}\"\\]|true|false)",
                "#.{0,10}",
            ],
            0..30,
        )
    ) {
        decode_all(&src.join("\n"));
    }
}

#[test]
fn the_shipped_files_decode() {
    let registry = halcyon_schema::Registry::from_toml(&shipped("deploy/agencies.toml")).unwrap();
    halcyon_policy::Policy::from_toml(&shipped("deploy/policy/england.toml"), "england.toml").unwrap();
    halcyon_timescales::RuleSet::from_toml(&shipped("deploy/timescales/england.toml"), "england.toml")
        .unwrap();
    halcyon_timescales::Calendar::from_toml(
        &shipped("deploy/timescales/bank-holidays-england-and-wales.toml"),
        "bank-holidays.toml",
    )
    .unwrap();
    halcyon_signals::SignalRules::from_toml(&shipped("deploy/signals.toml"), "signals.toml").unwrap();
    halcyon_node::auth::Tokens::from_toml(&shipped("deploy/tokens.toml"), &registry).unwrap();
}
