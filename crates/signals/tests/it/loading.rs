//! Rule files are checked on load; every rejection names the file, line, column and reason.

use halcyon_signals::SignalRules;

const GOOD: &str = r#"
version = "t1"
category = "D11"
recipients = ["mash"]

[[rule]]
id = "S01"
name = "two agencies"
kind = "multi-agency"
window_days = 28
concerns = ["concern"]
min_agencies = 2
source = "test"
"#;

fn error(src: &str) -> String {
    SignalRules::from_toml(src, "s.toml").unwrap_err().to_string()
}

#[test]
fn the_shipped_file_and_a_minimal_file_load() {
    let rules = SignalRules::england();
    assert_eq!(
        rules.rules().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["S01", "S02"]
    );
    assert_eq!(rules.get("S02").unwrap().window_days, 42);
    let minimal = SignalRules::from_toml(GOOD, "s.toml").unwrap();
    assert_eq!(minimal.version(), "t1");
    assert_eq!(minimal.rules()[0].line, 6);
}

#[test]
fn errors_name_the_line_column_and_reason() {
    let cases: [(&str, &str, &str); 8] = [
        (
            r#"concerns = ["concern"]"#,
            r#"concerns = ["drunk"]"#,
            "s.toml:11:13: unknown indicator \"drunk\"",
        ),
        (
            "window_days = 28",
            "window_days = 0",
            "s.toml:10:15: `window_days` must be 1 to 366, not 0",
        ),
        (
            "min_agencies = 2",
            "min_agencies = 1",
            "s.toml:12:16: `min_agencies` must be 2 to 16, not 1",
        ),
        (
            r#"kind = "multi-agency""#,
            r#"kind = "hunch""#,
            "s.toml:9:8: unknown rule kind \"hunch\"",
        ),
        (
            r#"recipients = ["mash"]"#,
            r#"recipients = ["the press"]"#,
            "s.toml:4:15: unknown recipient \"the press\"",
        ),
        (
            r#"category = "D11""#,
            r#"category = "D99""#,
            "s.toml:3:12: `category`:",
        ),
        (
            r#"id = "S01""#,
            r#"id = "S 1""#,
            "s.toml:7:6: rule id \"S 1\" contains ' '",
        ),
        (
            r#"source = "test""#,
            r#"sauce = "test""#,
            "s.toml:13:1: unknown field `sauce`",
        ),
    ];
    for (from, to, want) in cases {
        let src = GOOD.replacen(from, to, 1);
        let got = error(&src);
        assert!(got.starts_with(want), "{from} -> {to}: got {got}, want {want}");
    }
}

#[test]
fn rule_shapes_are_checked() {
    let twice = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[rule]]").unwrap()..]);
    assert!(
        error(&twice).contains("rule id \"S01\" is used twice (first at line 6)"),
        "{}",
        error(&twice)
    );
    let co = r#"
version = "t1"
category = "D11"
recipients = ["mash"]

[[rule]]
id = "S02"
name = "co"
kind = "co-occurrence"
window_days = 42
min_kinds = 3
source = "test"

[[rule.indicator]]
name = "missing"
facts = ["missing"]
min_count = 2

[[rule.indicator]]
name = "absence"
facts = ["absence"]
"#;
    let e = error(co);
    assert!(
        e.starts_with("s.toml:11:13: `min_kinds` must be 2 to 2, not 3"),
        "{e}"
    );
    let e = error(&co.replace("min_kinds = 3", "min_kinds = 2\nmin_agencies = 2"));
    assert!(e.contains("`min_agencies` is for multi-agency rules"), "{e}");
    let e = error(&co.replace("min_kinds = 3\n", ""));
    assert!(e.contains("missing field `min_kinds`"), "{e}");
    assert!(SignalRules::from_toml(&co.replace("min_kinds = 3", "min_kinds = 2"), "s.toml").is_ok());
    let e = SignalRules::load(std::path::Path::new("/nonexistent/s.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/s.toml: cannot read"), "{e}");
}
