//! The chronology as one self-contained HTML page for a reviewer to open from an email attachment: inline
//! CSS with a print stylesheet, an inline SVG with one lane per agency (facts on a time axis in their
//! originating agency's lane, a tick in each other lane from when that agency could see the fact, access
//! events as triangles in the accessing agency's lane, deadline breaches as red diamonds in the owning agency's
//! lane when they first happened, multi-agency signals as orange squares in each lane that could receive them,
//! from when it could, a dashed line across all lanes where a new sharing policy came into force), the facts
//! (with a row where the policy changed), breaches, signals and accesses as tables, and a few lines
//! of inline script (click a fact to highlight it everywhere). No external references of any kind; every
//! value is escaped.

use std::fmt::Write as _;

use super::{Chronology, Period, Render, access_event, categories_text, time};

/// The marker of a breach: a diamond this many units from its centre to each point.
const BREACH_R: f64 = 7.0;
/// The marker of a signal: a square this many units from its centre to each side.
const SIGNAL_R: f64 = 5.0;

const LABEL_W: f64 = 230.0;
const TRACK_W: f64 = 900.0;
const AXIS_H: f64 = 34.0;
const LANE_H: f64 = 40.0;
const TICKS: usize = 6;

/// Colours by category, D0..D14.
const PALETTE: [&str; halcyon_schema::Category::COUNT as usize] = [
    "#6b7280", "#b91c1c", "#c2410c", "#b45309", "#7c3aed", "#6d28d9", "#0f766e", "#be185d", "#1d4ed8",
    "#15803d", "#0369a1", "#9f1239", "#475569", "#334155", "#a16207",
];

const STYLE: &str = r#"
:root { --ink: #111827; --muted: #4b5563; --rule: #d1d5db; --lane: #f3f4f6; --pick: #fde68a; }
* { box-sizing: border-box; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink); margin: 24px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 24px 0 8px; border-bottom: 1px solid var(--rule); padding-bottom: 2px; }
.sub, .note { color: var(--muted); margin: 2px 0; }
svg.lanes { width: 100%; height: auto; max-width: 1160px; display: block; }
svg .lane-bg { fill: var(--lane); }
svg .lane-label { font-size: 12px; fill: var(--ink); }
svg .tick { stroke: var(--rule); stroke-width: 1; }
svg .tick-label { font-size: 10px; fill: var(--muted); }
svg .fact { stroke: #fff; stroke-width: 1.5; cursor: pointer; }
svg .seen { stroke-width: 2; opacity: .55; cursor: pointer; }
svg .access { fill: #111827; }
svg .access.denied { fill: #dc2626; }
svg .access.break-glass { fill: #dc2626; stroke: #7f1d1d; stroke-width: 1.5; }
svg .signal { fill: #ea580c; stroke: #7c2d12; stroke-width: 1.5; cursor: pointer; }
svg .breach { fill: #dc2626; stroke: #7f1d1d; stroke-width: 1.5; cursor: pointer; }
svg .policy { stroke: #1e3a8a; stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .policy-label { font-size: 10px; fill: #1e3a8a; }
svg .picked { stroke: #111827; stroke-width: 3; opacity: 1; }
.legend { color: var(--muted); font-size: 12px; }
.legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; vertical-align: -1px; margin-right: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { border: 1px solid var(--rule); padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #f9fafb; font-weight: 600; }
td.vis { white-space: nowrap; font-size: 11px; }
td.own { color: var(--muted); }
td.none { color: #9ca3af; text-align: center; }
tr.picked td { background: var(--pick); }
tr.break-glass td { background: #fee2e2; }
tr.breach td { background: #fef2f2; }
tr.signal td { background: #fff7ed; }
tr.policy td { background: #eff6ff; color: #1e3a8a; font-weight: 600; }
tbody tr { cursor: pointer; }
footer { margin-top: 24px; color: var(--muted); font-size: 11px; }
@media print {
  @page { size: A4 landscape; margin: 10mm; }
  body { margin: 0; font-size: 9pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .noprint { display: none; }
  svg.lanes { max-width: none; }
  section { break-inside: auto; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  tr.picked td { background: none; }
  table { font-size: 8pt; }
}
"#;

const SCRIPT: &str = r#"
(function () {
  var marked = document.querySelectorAll('[data-fact]');
  function pick(fact) {
    for (var i = 0; i < marked.length; i++) {
      marked[i].classList.toggle('picked', marked[i].getAttribute('data-fact') === fact);
    }
  }
  for (var i = 0; i < marked.length; i++) {
    marked[i].addEventListener('click', function () { pick(this.getAttribute('data-fact')); });
  }
  document.body.setAttribute('data-script', 'ready');
})();
"#;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Minutes precision for the tables: `2026-03-06 13:00`.
fn short(ms: i64) -> String {
    let t = time(ms);
    t.get(..16).map(|s| s.replace('T', " ")).unwrap_or(t)
}

struct Axis {
    t0: i64,
    t1: i64,
}

impl Axis {
    fn x(&self, ms: i64) -> f64 {
        if self.t1 <= self.t0 {
            return LABEL_W + TRACK_W / 2.0;
        }
        LABEL_W + (ms - self.t0) as f64 / (self.t1 - self.t0) as f64 * TRACK_W
    }
}

pub fn render(c: &Chronology) -> String {
    let mut times: Vec<i64> = c.facts.iter().map(|f| f.occurred_ms).collect();
    times.extend(c.accesses.iter().map(|a| a.at_ms));
    times.extend(c.breaches.iter().map(|b| b.at_ms));
    times.extend(c.signals.iter().map(|s| s.at_ms));
    let policy_changes = c.policy_changes();
    times.extend(policy_changes.iter().map(|(t, _)| *t));
    times.extend(
        c.facts
            .iter()
            .flat_map(|f| f.visible.iter().flatten())
            .map(|p| p.from_ms),
    );
    let (t0, t1) = (
        times.iter().copied().min().unwrap_or(0),
        times.iter().copied().max().unwrap_or(0),
    );
    // A margin so markers at the ends are not cut.
    let pad = ((t1 - t0) / 40).max(3_600_000);
    let axis = Axis {
        t0: t0 - pad,
        t1: t1 + pad,
    };
    let lane_y = |i: usize| AXIS_H + i as f64 * LANE_H;
    let height = AXIS_H + c.lanes.len() as f64 * LANE_H + 6.0;
    let width = LABEL_W + TRACK_W + 10.0;

    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{}</title>", escape(&c.title()));
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        h,
        "<header>\n<h1>{}</h1>\n<p class=\"sub\">{}</p>",
        escape(&c.title()),
        escape(&c.subtitle())
    );
    h.push_str(
        "<p class=\"note\">Each lane is an agency. A dot is a fact in the lane of the agency that recorded \
         it, at the time it occurred; a tick in another lane marks when that agency could first see it \
         under its standing entitlements (purpose safeguarding); a triangle is an access to the child's \
         record (red: denied or break-glass); a red diamond is a statutory deadline breached, in the lane of \
         the agency whose deadline it was, at the moment it was first breached; an orange square is a \
         multi-agency signal, in each lane whose agency could receive it, from when it could; a dashed line \
         across the lanes is the moment a new sharing policy came into force (each moment is decided with \
         the policy in force then). “Held from” is when Halcyon stored the fact.</p>\n</header>\n",
    );

    // Timeline.
    h.push_str("<section class=\"timeline\">\n<h2>Timeline</h2>\n");
    let _ = writeln!(
        h,
        "<svg class=\"lanes\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!(
            "{} facts, {} accesses, {} deadline breaches and {} signals in {} agency lanes",
            c.facts.len(),
            c.accesses.len(),
            c.breaches.len(),
            c.signals.len(),
            c.lanes.len()
        ))
    );
    for k in 0..=TICKS {
        let ms = axis.t0 + (axis.t1 - axis.t0) * k as i64 / TICKS as i64;
        let x = axis.x(ms);
        let _ = writeln!(
            h,
            "<line class=\"tick\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text class=\"tick-label\" x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            AXIS_H - 12.0,
            height - 6.0,
            escape(&short(ms)[..10])
        );
    }
    for &(at_ms, policy) in &policy_changes {
        let x = axis.x(at_ms);
        let _ = writeln!(
            h,
            "<g data-policy=\"{}\"><line class=\"policy\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text class=\"policy-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text><title>{}</title></g>",
            escape(&c.policies[policy].version),
            AXIS_H - 4.0,
            height - 6.0,
            x + 3.0,
            AXIS_H - 4.0,
            escape(&c.policies[policy].version),
            escape(&format!("{} {}", short(at_ms), c.policy_text(policy)))
        );
    }
    for (i, lane) in c.lanes.iter().enumerate() {
        let y = lane_y(i);
        let _ = writeln!(
            h,
            "<g class=\"lane\" data-lane=\"{}\"><rect class=\"lane-bg\" x=\"0\" y=\"{:.1}\" width=\"{width:.0}\" height=\"{:.1}\" rx=\"3\"/><text class=\"lane-label\" x=\"8\" y=\"{:.1}\">{}</text><title>{}</title></g>",
            escape(&lane.agency),
            y + 2.0,
            LANE_H - 4.0,
            y + LANE_H / 2.0 + 4.0,
            escape(&truncate(&lane.name, 34)),
            escape(&format!("{} ({})", lane.name, lane.agency)),
        );
    }
    for (i, f) in c.facts.iter().enumerate() {
        let Some(origin) = c.lanes.iter().position(|l| l.agency == f.agency) else {
            continue;
        };
        let colour = f
            .category
            .map(|cat| PALETTE[usize::from(cat.index())])
            .unwrap_or("#6b7280");
        for (lane, periods) in f.visible.iter().enumerate() {
            if lane == origin {
                continue;
            }
            for p in periods {
                let x = axis.x(p.from_ms);
                let y = lane_y(lane);
                let _ = writeln!(
                    h,
                    "<line class=\"seen\" data-fact=\"{i}\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{colour}\"><title>{}</title></line>",
                    y + 9.0,
                    y + LANE_H - 9.0,
                    escape(&format!(
                        "{} could see fact {} ({} from {}) {}",
                        c.lanes[lane].agency,
                        i + 1,
                        f.event_type,
                        f.agency,
                        period_text(c, p)
                    ))
                );
            }
        }
        let _ = writeln!(
            h,
            "<circle class=\"fact\" data-fact=\"{i}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"{colour}\"><title>{}</title></circle>",
            axis.x(f.occurred_ms),
            lane_y(origin) + LANE_H / 2.0,
            escape(&format!(
                "{}. {} {} ({}) by {}, case {}",
                i + 1,
                short(f.occurred_ms),
                f.event_type,
                f.category.map(|c| c.to_string()).unwrap_or_default(),
                f.agency,
                f.case_id
            ))
        );
    }
    for a in &c.accesses {
        let Some(lane) = c.lanes.iter().position(|l| l.agency == a.agency) else {
            continue;
        };
        let (x, y) = (axis.x(a.at_ms), lane_y(lane) + LANE_H / 2.0);
        let class = if a.break_glass {
            "access break-glass"
        } else if a.outcome != "permitted" {
            "access denied"
        } else {
            "access"
        };
        let _ = writeln!(
            h,
            "<path class=\"{class}\" data-access=\"{}\" d=\"M{x:.1} {:.1} L{:.1} {:.1} L{:.1} {:.1} Z\"><title>{}</title></path>",
            escape(&a.record_id),
            y - 7.0,
            x + 6.0,
            y + 5.0,
            x - 6.0,
            y + 5.0,
            escape(&format!("{} {} {}", short(a.at_ms), a.agency, access_event(a)))
        );
    }
    for b in &c.breaches {
        let Some(lane) = c.lanes.iter().position(|l| l.agency == b.agency) else {
            continue;
        };
        let (x, y) = (axis.x(b.at_ms), lane_y(lane) + LANE_H / 2.0);
        let fact = b
            .start_fact
            .map(|i| format!(" data-fact=\"{i}\""))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<path class=\"breach\" data-breach=\"{}\"{fact} d=\"M{x:.1} {:.1} L{:.1} {y:.1} L{x:.1} {:.1} L{:.1} {y:.1} Z\"><title>{}</title></path>",
            escape(&b.key),
            y - BREACH_R,
            x + BREACH_R,
            y + BREACH_R,
            x - BREACH_R,
            escape(&format!("{} {}", short(b.at_ms), c.breach_text(b)))
        );
    }
    for s in &c.signals {
        for (lane, from) in s.known.iter().enumerate() {
            let Some(from) = from else {
                continue;
            };
            let (x, y) = (axis.x(*from), lane_y(lane) + LANE_H / 2.0);
            let _ = writeln!(
                h,
                "<rect class=\"signal\" data-signal=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
                escape(&s.id),
                x - SIGNAL_R,
                y - SIGNAL_R,
                2.0 * SIGNAL_R,
                2.0 * SIGNAL_R,
                escape(&format!(
                    "{} could receive from {}: {} (first fired {})",
                    c.lanes[lane].agency,
                    short(*from),
                    c.signal_text(s),
                    short(s.at_ms)
                ))
            );
        }
    }
    h.push_str("</svg>\n<p class=\"legend\">");
    let mut seen_categories: Vec<_> = c.facts.iter().filter_map(|f| f.category).collect();
    seen_categories.sort();
    seen_categories.dedup();
    for cat in seen_categories {
        let _ = write!(
            h,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{} {}</span>",
            PALETTE[usize::from(cat.index())],
            cat,
            escape(cat.name())
        );
    }
    h.push_str("<span>▲ access</span><span>◆ deadline first breached</span><span>■ multi-agency signal</span><span>┆ a new sharing policy in force</span></p>\n</section>\n");

    // Facts table.
    let _ = writeln!(
        h,
        "<section>\n<h2>Facts ({})</h2>\n<table class=\"facts\">\n<thead><tr><th>#</th><th>Occurred</th><th>Agency</th><th>Cat.</th><th>Event</th><th>Case</th><th>Held from</th>",
        c.facts.len()
    );
    for lane in &c.lanes {
        let _ = write!(
            h,
            "<th title=\"{}\">{}</th>",
            escape(&lane.name),
            escape(&lane.agency)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    let mut policies = policy_changes.iter().peekable();
    let policy_row = |h: &mut String, at_ms: i64, policy: usize| {
        let _ = writeln!(
            h,
            "<tr class=\"policy\" data-policy=\"{}\"><td></td><td>{}</td><td colspan=\"{}\">{}</td></tr>",
            escape(&c.policies[policy].version),
            escape(&short(at_ms)),
            5 + c.lanes.len(),
            escape(&c.policy_text(policy)),
        );
    };
    for (i, f) in c.facts.iter().enumerate() {
        // A fact that occurred as a policy came into force is decided under it: the row comes first.
        while let Some(&(at_ms, policy)) = policies.next_if(|(t, _)| *t <= f.occurred_ms) {
            policy_row(&mut h, at_ms, policy);
        }
        let _ = write!(
            h,
            "<tr id=\"fact-{i}\" data-fact=\"{i}\" data-event-id=\"{}\" data-policy=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&f.event_id),
            escape(f.policy.map_or("", |p| c.policies[p].version.as_str())),
            i + 1,
            escape(&short(f.occurred_ms)),
            escape(&f.agency),
            escape(&f.category.map(|c| c.to_string()).unwrap_or_default()),
            &match &f.corrected {
                None => escape(&f.event_type),
                Some(c) => format!(
                    "<del>{}</del> <span class=\"corrected\">{} by {} at {}</span>",
                    escape(&f.event_type),
                    if c.entered_in_error {
                        "entered in error"
                    } else {
                        "corrected"
                    },
                    escape(&c.correction_event_id),
                    escape(&short(c.corrected_at_ms)),
                ),
            },
            escape(&f.case_id),
            escape(&short(f.stored_ms)),
        );
        for (lane, periods) in c.lanes.iter().zip(&f.visible) {
            if periods.is_empty() {
                h.push_str("<td class=\"vis none\">—</td>");
                continue;
            }
            let own = lane.agency == f.agency;
            let cell: Vec<String> = periods
                .iter()
                .map(|p| match p.until_ms {
                    Some(u) => format!("{} – {}", short(p.from_ms), short(u)),
                    None => short(p.from_ms),
                })
                .collect();
            let _ = write!(
                h,
                "<td class=\"vis{}\" title=\"{}\">{}</td>",
                if own { " own" } else { "" },
                escape(&c.periods_text(periods)),
                escape(&cell.join("; "))
            );
        }
        h.push_str("</tr>\n");
    }
    for &(at_ms, policy) in policies {
        policy_row(&mut h, at_ms, policy);
    }
    h.push_str("</tbody>\n</table>\n</section>\n");

    // Breaches table.
    let _ = writeln!(
        h,
        "<section>\n<h2>Statutory deadline breaches ({})</h2>",
        c.breaches.len()
    );
    if c.breaches.is_empty() {
        h.push_str("<p class=\"note\">No statutory deadline of this child had been breached.</p>\n");
    } else {
        h.push_str("<table class=\"breaches\">\n<thead><tr><th>First breached</th><th>Rule</th><th>Agency</th><th>Started by</th><th>Due</th><th>State</th><th>Late</th><th>Closed by</th><th>Could know of it</th></tr></thead>\n<tbody>\n");
        for b in &c.breaches {
            let fact = b
                .start_fact
                .map(|i| format!(" data-fact=\"{i}\""))
                .unwrap_or_default();
            let started = match b.start_fact {
                Some(i) => format!("{} (fact {})", b.start_event_type, i + 1),
                None => b.start_event_type.clone(),
            };
            let _ = writeln!(
                h,
                "<tr class=\"breach\" data-breach-row=\"{}\"{fact}><td>{}</td><td>{} {} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&b.key),
                escape(&time(b.at_ms)),
                escape(&b.rule_id),
                escape(&b.rule_name),
                escape(&b.limit),
                escape(&b.agency),
                escape(&started),
                escape(&time(b.due_ms)),
                escape(&b.state),
                escape(&b.late),
                escape(
                    &b.closed_by
                        .as_ref()
                        .map(|(t, _, at)| format!("{t} at {}", time(*at)))
                        .unwrap_or_default()
                ),
                escape(&c.lanes_text(&b.known)),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");

    // Signals table.
    let _ = writeln!(
        h,
        "<section>\n<h2>Multi-agency signals ({})</h2>",
        c.signals.len()
    );
    if c.signals.is_empty() {
        h.push_str("<p class=\"note\">No multi-agency signal had fired for this child.</p>\n");
    } else {
        h.push_str("<table class=\"signals\">\n<thead><tr><th>First fired</th><th>Rule</th><th>Cites facts</th><th>Outcome</th><th>Could receive it</th></tr></thead>\n<tbody>\n");
        for s in &c.signals {
            let cited: Vec<String> = s.cited.iter().map(|i| (i + 1).to_string()).collect();
            let _ = writeln!(
                h,
                "<tr class=\"signal\" data-signal-row=\"{}\"><td>{}</td><td>{} {} ({}, {} days)</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s.id),
                escape(&time(s.at_ms)),
                escape(&s.rule_id),
                escape(&s.rule_name),
                escape(&s.rule_kind),
                s.window_days,
                escape(&cited.join(", ")),
                escape(s.outcome.as_deref().unwrap_or("none recorded")),
                escape(&c.lanes_text(&s.known)),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");

    // Accesses table.
    let _ = writeln!(
        h,
        "<section>\n<h2>Accesses to the child's record ({})</h2>",
        c.accesses.len()
    );
    if c.accesses.is_empty() {
        h.push_str(
            "<p class=\"note\">No access to this child's record is recorded in the AUDIT stream.</p>\n",
        );
    } else {
        h.push_str("<table class=\"accesses\">\n<thead><tr><th>At</th><th>Agency</th><th>Role</th><th>Purpose</th><th>Call</th><th>Outcome</th><th>Disclosed</th><th>Withheld</th><th>Categories</th><th>Record</th></tr></thead>\n<tbody>\n");
        for a in &c.accesses {
            let _ = writeln!(
                h,
                "<tr class=\"access{}\" data-record=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} (AUDIT:{})</td></tr>",
                if a.break_glass { " break-glass" } else { "" },
                escape(&a.record_id),
                escape(&time(a.at_ms)),
                escape(&a.agency),
                escape(&a.role),
                escape(&a.purpose),
                escape(&a.method),
                escape(&a.outcome),
                if a.break_glass { " (break-glass)" } else { "" },
                a.facts_disclosed,
                a.facts_withheld,
                escape(&categories_text(&a.categories)),
                escape(&a.record_id),
                a.audit_sequence
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");
    let _ = writeln!(
        h,
        "<footer>Generated by halcyon audit chronology at {} from the agency streams and the AUDIT stream; {}. Visibility is each agency's standing view (safeguarding) as the policy in force at each moment decides it on the child's facts in the order they occurred.</footer>",
        escape(&time(c.generated_ms)),
        escape(&c.policies_text())
    );
    let _ = writeln!(h, "<script>{SCRIPT}</script>\n</body>\n</html>");
    h
}

fn period_text(c: &Chronology, p: &Period) -> String {
    c.periods_text(std::slice::from_ref(p))
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
