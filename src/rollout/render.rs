//! The plan as a readable table and as JSON.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::diff::{Build, ChangeKind, Impact};
use super::waves::Plan;
use super::RolloutError;

/// Left-aligned columns, two spaces apart, indented by two.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(text, " {cell:<width$} ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn side(build: Option<&Build>, show_build: bool) -> String {
    match build {
        None => "-".to_string(),
        Some(b) if show_build => match (b.build_id, b.build_time) {
            (Some(id), _) => format!("{} (build {id})", b.version),
            (None, Some(time)) => format!("{} (built {time})", b.version),
            (None, None) => b.version.clone(),
        },
        Some(b) => b.version.clone(),
    }
}

fn impact_label(impact: Impact) -> &'static str {
    match impact {
        Impact::Disruptive => "disruptive",
        Impact::Online => "online",
    }
}

/// The plan as text for a terminal.
pub fn plan_table(plan: &Plan) -> String {
    let mut out = String::new();
    let planned = plan.planned_hosts().len();
    let _ = writeln!(
        out,
        "Rollout plan: {} profile(s), {} host(s) to upgrade in {} wave(s), {} skipped; at most {} host(s) at once",
        plan.profiles.len(),
        planned,
        plan.waves.len(),
        plan.skipped.len(),
        plan.max_parallel
    );
    for diff in &plan.profiles {
        let hosts = plan
            .waves
            .iter()
            .flat_map(|w| &w.hosts)
            .chain(plan.skipped.iter().map(|s| &s.host))
            .filter(|h| h.profile == diff.profile)
            .map(|h| h.host.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        let _ = write!(
            out,
            "\nProfile {} ({} -> {}), {hosts} host(s): ",
            diff.profile, diff.from, diff.to
        );
        if diff.is_empty() {
            out.push_str("no changes, hosts skipped\n");
            continue;
        }
        let kinds = [
            ChangeKind::Upgraded,
            ChangeKind::Downgraded,
            ChangeKind::Rebuilt,
            ChangeKind::Added,
            ChangeKind::Removed,
            ChangeKind::SlotAdded,
            ChangeKind::SlotRemoved,
        ];
        let counts: Vec<String> = kinds
            .iter()
            .map(|&k| (k, diff.count(k)))
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| format!("{n} {}", k.label()))
            .collect();
        let disruptive = diff
            .changes
            .iter()
            .filter(|c| c.impact == Impact::Disruptive)
            .count();
        let _ = writeln!(
            out,
            "{} change(s): {}; {disruptive} disruptive, {} online",
            diff.changes.len(),
            counts.join(", "),
            diff.changes.len() - disruptive
        );
        let rows: Vec<Vec<String>> = diff
            .changes
            .iter()
            .map(|c| {
                let show_build = c.kind == ChangeKind::Rebuilt;
                vec![
                    c.kind.label().to_string(),
                    c.package.clone(),
                    c.slot.clone(),
                    side(c.from.as_ref(), show_build),
                    side(c.to.as_ref(), show_build),
                    impact_label(c.impact).to_string(),
                    c.matched
                        .clone()
                        .unwrap_or_else(|| "(no pattern: default)".to_string()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "CHANGE", "PACKAGE", "SLOT", "FROM", "TO", "IMPACT", "PATTERN",
            ],
            &rows,
        ));
        for slot_change in &diff.slot_changes {
            let _ = writeln!(
                out,
                "  slots of {}: added {}, removed {}; active after the switch: {}",
                slot_change.package,
                or_none(&slot_change.added),
                or_none(&slot_change.removed),
                slot_change.active
            );
        }
    }
    out.push_str(
        "\nWaves (in order; each starts when every host of the previous one is healthy):\n",
    );
    if plan.waves.is_empty() {
        out.push_str("  none: nothing to do\n");
    } else {
        let rows: Vec<Vec<String>> = plan
            .waves
            .iter()
            .map(|w| {
                let profiles: BTreeSet<&str> = w.hosts.iter().map(|h| h.profile.as_str()).collect();
                let farms: BTreeSet<String> = w.hosts.iter().map(|h| h.farm_id()).collect();
                let mut sample: Vec<&str> =
                    w.hosts.iter().take(3).map(|h| h.host.as_str()).collect();
                let more = w.hosts.len().saturating_sub(sample.len());
                let more_text = format!("+{more}");
                if more > 0 {
                    sample.push(&more_text);
                }
                vec![
                    w.number.to_string(),
                    w.title(),
                    w.hosts.len().to_string(),
                    farms.len().to_string(),
                    w.batches.len().to_string(),
                    profiles.into_iter().collect::<Vec<_>>().join(","),
                    sample.join(" "),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "WAVE",
                "STEP",
                "HOSTS",
                "FARMS",
                "BATCHES",
                "PROFILES",
                "HOSTS (FIRST)",
            ],
            &rows,
        ));
    }
    if !plan.skipped.is_empty() {
        let mut reasons: Vec<(String, String, usize)> = Vec::new();
        for skipped in &plan.skipped {
            match reasons
                .iter_mut()
                .find(|(p, r, _)| *p == skipped.host.profile && *r == skipped.reason)
            {
                Some(entry) => entry.2 += 1,
                None => reasons.push((skipped.host.profile.clone(), skipped.reason.clone(), 1)),
            }
        }
        out.push_str("\nSkipped:\n");
        for (profile, reason, count) in reasons {
            let _ = writeln!(out, "  {count} host(s) of profile {profile}: {reason}");
        }
    }
    if !plan.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for warning in &plan.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    out
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The plan as pretty JSON (every field of [`Plan`]).
pub fn plan_json(plan: &Plan) -> Result<String, RolloutError> {
    let mut text = serde_json::to_string_pretty(plan).map_err(RolloutError::Json)?;
    text.push('\n');
    Ok(text)
}
