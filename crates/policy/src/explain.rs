//! Text for people: `explain` (a decision and the rule path behind it) and `check` (is a policy file
//! valid, and what does it contain). The CLI's `halcyon policy explain` and `halcyon policy check` print
//! these.

use std::fmt::Write as _;
use std::path::Path;

use halcyon_schema::AgencyKind;

use crate::decision::{ConsentGround, Decision, decide_explained};
use crate::file::PolicyError;
use crate::policy::Policy;
use crate::request::Request;
use crate::vocabulary::Mode;

/// The decision for a request and the rule path that led to it, as text:
///
/// ```text
/// PERMIT D4.police.pushed (policy england-2026.4)
///   pushed, full, basis law enforcement, DPA 2018 Part 3 and Schedule 8
/// rule path:
///   1. request: police-sy (police, practitioner) asks for D4 recorded by csc-rotherham, for safeguarding
///   …
/// ```
pub fn explain(policy: &Policy, req: &Request<'_>) -> String {
    let decision = decide_explained(policy, req);
    let mut out = String::new();
    match &decision {
        Decision::Permit(p) => {
            let _ = writeln!(out, "PERMIT {} (policy {})", p.rule, p.policy_version);
            let _ = write!(
                out,
                "  {}, {}, basis {}",
                p.mode,
                p.projection,
                p.basis.citation()
            );
            if let Some(c) = p.condition {
                let _ = write!(out, " with {}", c.citation());
            }
            out.push('\n');
            if let Some(r) = p.relied_on {
                let _ = writeln!(out, "  relationship relied on: {r}");
            }
            match p.consent {
                ConsentGround::NotRequired => {}
                ConsentGround::Consented => out.push_str("  consent relied on\n"),
                ConsentGround::Exempted => out.push_str("  consent exemption relied on\n"),
            }
            if p.break_glass {
                let _ = writeln!(
                    out,
                    "  BREAK-GLASS: permitted on a break-glass, flagged for review; lapses at {} ms",
                    p.break_glass_expires_at_ms.unwrap_or_default()
                );
            }
            if p.notify_owner {
                out.push_str("  the owning agency is notified of this view\n");
            }
        }
        Decision::Deny(d) => {
            let _ = writeln!(out, "DENY {} (policy {})", d.rule, d.policy_version);
            let _ = writeln!(out, "  reason: {}", d.reason);
        }
    }
    out.push_str("rule path:\n");
    for (i, step) in decision.path().iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    out
}

/// Loads and checks a policy file; on success, a summary of what it contains.
pub fn check(path: &Path) -> Result<String, PolicyError> {
    Policy::load(path).map(|p| p.summary())
}

/// Checks policy text; on success, a summary of what it contains.
pub fn check_source(src: &str, file_name: &str) -> Result<String, PolicyError> {
    Policy::from_toml(src, file_name).map(|p| p.summary())
}

impl Policy {
    /// What the policy contains, for `halcyon policy check`: version, counts, and the table of modes.
    pub fn summary(&self) -> String {
        let cells: Vec<_> = self.cells().collect();
        let granting = cells.iter().filter(|c| c.mode() != Mode::Never).count();
        let n_categories = self.categories.iter().flatten().count();
        let mut out = String::new();
        let jurisdiction = if self.jurisdiction.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.jurisdiction)
        };
        let _ = writeln!(
            out,
            "{}: policy {}{jurisdiction} is valid",
            self.file_name, self.version
        );
        let _ = writeln!(
            out,
            "  {n_categories} categories, {} cells ({granting} granting, {} never), stage gates: {}, break-glass up to {} minutes",
            cells.len(),
            cells.len() - granting,
            self.gates.len(),
            self.break_glass.max_minutes
        );
        let _ = writeln!(out, "  anything not granted is denied");
        out.push('\n');
        let _ = write!(out, "  {:<4}", "");
        let mut header = String::new();
        for kind in AgencyKind::ALL {
            let _ = write!(header, " {:<10}", short(kind));
        }
        out.push_str(header.trim_end());
        out.push('\n');
        for rules in self.categories.iter().flatten() {
            let mut row = format!("  {:<4}", rules.category().to_string());
            for kind in AgencyKind::ALL {
                let mark = match self.cell(rules.category(), kind) {
                    None => "-".to_owned(),
                    Some(cell) => {
                        let letter = match cell.mode() {
                            Mode::Pushed => "P",
                            Mode::Query => "Q",
                            Mode::Flag => "F",
                            Mode::OriginatorApproval => "N",
                            Mode::Never => "-",
                        };
                        let rel = if cell.relationships().is_empty() { "" } else { "*" };
                        format!("{letter}{rel}")
                    }
                };
                let _ = write!(row, " {mark:<10}");
            }
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out.push_str(
            "  (P pushed, Q query, F flag, N originator approval, - never; * needs a relationship)\n",
        );
        out
    }
}

fn short(kind: AgencyKind) -> &'static str {
    kind.short_name()
}
