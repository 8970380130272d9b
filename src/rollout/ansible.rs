//! The plan as an Ansible inventory and playbook: one play per wave, `serial` batches of
//! `max_parallel` hosts, a health check at the end of every batch, and any failure stops the
//! whole rollout before the next batch or wave.
//!
//! YAML is written by hand: every scalar and list is emitted as JSON, which YAML reads as
//! flow style, so quoting never depends on what a host name or command contains.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::inventory::{HealthCheck, Inventory};
use super::waves::{Plan, Wave, WaveKind};
use super::RolloutError;

pub const INVENTORY_FILE: &str = "inventory.yml";
pub const PLAYBOOK_FILE: &str = "playbook.yml";

/// A value as a one-line YAML flow node.
fn flow<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing plain data (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn group_width(plan: &Plan) -> usize {
    plan.waves.len().to_string().len().max(2)
}

/// The Ansible inventory (YAML): every planned host with its profile, site, farm and member,
/// one group per wave, and the per-profile package lists in `binfarm_rollout`.
pub fn render_inventory(plan: &Plan, inventory: &Inventory, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str("all:\n  vars:\n");
    let mut emerge = inventory.rollout.emerge_command.clone();
    // Nodes may have --ask in EMERGE_DEFAULT_OPTS; nobody answers prompts here.
    emerge.push("--ask=n".to_string());
    out.push_str(&format!("    binfarm_emerge: {}\n", flow(&emerge)));
    out.push_str(&format!(
        "    binfarm_emerge_options: {}\n",
        flow(&inventory.rollout.emerge_options)
    ));
    out.push_str(&format!("    binfarm_rollout: {}\n", flow(&plan.actions)));
    for (key, value) in &inventory.ansible.vars {
        out.push_str(&format!(
            "    {}: {}\n",
            flow(key),
            flow(&toml_to_json(value))
        ));
    }

    let planned = plan.planned_hosts();
    out.push_str("  hosts:\n");
    for host in inventory
        .hosts()
        .filter(|h| planned.contains(h.member.host.as_str()))
    {
        let mut vars = Map::new();
        vars.insert("binfarm_profile".into(), json!(host.member.profile));
        vars.insert("binfarm_site".into(), json!(host.site));
        vars.insert("binfarm_farm".into(), json!(host.farm));
        vars.insert("binfarm_member".into(), json!(host.member.member));
        for (key, value) in &host.member.vars {
            vars.insert(key.clone(), toml_to_json(value));
        }
        out.push_str(&format!(
            "    {}: {}\n",
            flow(&host.member.host),
            flow(&vars)
        ));
    }

    if !plan.waves.is_empty() {
        out.push_str("  children:\n");
        let width = group_width(plan);
        for wave in &plan.waves {
            out.push_str(&format!("    {}:\n      hosts:\n", wave.group_name(width)));
            for host in &wave.hosts {
                out.push_str(&format!("        {}: {{}}\n", flow(&host.host)));
            }
        }
    }
    out
}

fn health_check_task(check: &HealthCheck) -> String {
    // Health checks are read-only, so they also run in check mode: a dry run then shows
    // whether every host is healthy before anything changes.
    let retry = format!(
        "      check_mode: false\n      register: binfarm_health\n      until: binfarm_health is succeeded\n      retries: {}\n      delay: {}\n",
        check.retries, check.delay
    );
    if let Some(url) = &check.url {
        format!(
            "    - name: {}\n      ansible.builtin.uri:\n        url: {}\n        status_code: {}\n{retry}",
            flow(&format!("Health check: HTTP {} from {url}", check.status_code)),
            flow(url),
            check.status_code
        )
    } else if let Some(command) = &check.command {
        format!(
            "    - name: Health check (command)\n      ansible.builtin.shell: {}\n      changed_when: false\n{retry}",
            flow(command)
        )
    } else {
        "    - name: Health check (host answers)\n      ansible.builtin.ping:\n".to_string()
    }
}

/// Logs what the wave runs on each host; runs in check mode too, so a dry run lists the
/// exact commands.
fn show_task(expression: &str) -> String {
    format!(
        "    - name: \"Show what runs on this host\"\n      ansible.builtin.debug:\n        msg: \"{{{{ {expression} }}}}\"\n"
    )
}

/// The emerge command line of a wave, as a Jinja expression (a list).
fn emerge_expression(extra_options: &str, atoms_key: &str) -> String {
    format!("(binfarm_emerge + {extra_options} + binfarm_rollout[binfarm_profile].{atoms_key})")
}

fn shell_task(name: &str, commands: &[String]) -> String {
    if commands.is_empty() {
        return String::new();
    }
    format!(
        "    - name: {}\n      ansible.builtin.shell: \"{{{{ item }}}}\"\n      loop: {}\n",
        flow(name),
        flow(commands)
    )
}

/// An `emerge` task: `argv` is built on the host from the inventory's lists, so nothing is
/// re-split by a shell. `ansible.builtin.command` does not run in check mode.
fn emerge_task(name: &str, extra_options: &str, atoms_key: &str) -> String {
    format!(
        "    - name: {}\n      ansible.builtin.command:\n        argv: \"{{{{ {} }}}}\"\n      when: binfarm_rollout[binfarm_profile].{atoms_key} | length > 0\n",
        flow(name),
        emerge_expression(extra_options, atoms_key)
    )
}

fn play(wave: &Wave, plan: &Plan, inventory: &Inventory) -> String {
    let width = group_width(plan);
    let mut out = format!(
        "- name: {}\n  hosts: {}\n  gather_facts: false\n  become: {}\n  serial: {}\n  order: inventory\n  max_fail_percentage: 0\n  any_errors_fatal: true\n  tasks:\n",
        flow(&format!(
            "Wave {} of {}: {} ({} host{})",
            wave.number,
            plan.waves.len(),
            wave.title(),
            wave.hosts.len(),
            if wave.hosts.len() == 1 { "" } else { "s" }
        )),
        wave.group_name(width),
        inventory.ansible.use_become,
        plan.max_parallel
    );
    let settings = &inventory.rollout;
    match wave.kind {
        WaveKind::Disruptive => {
            out.push_str(&show_task(&format!(
                "{} | join(' ')",
                emerge_expression("binfarm_emerge_options", "disruptive")
            )));
            out.push_str(&shell_task(
                "Before the disruptive upgrade",
                &settings.before_disruptive,
            ));
            out.push_str(&emerge_task(
                "Install the disruptive changes (binary packages only)",
                "binfarm_emerge_options",
                "disruptive",
            ));
            out.push_str(&shell_task(
                "After the disruptive upgrade",
                &settings.after_disruptive,
            ));
        }
        WaveKind::Online => {
            out.push_str(&show_task(&format!(
                "{} | join(' ')",
                emerge_expression("binfarm_emerge_options", "online")
            )));
            out.push_str(&emerge_task(
                "Install the online changes (binary packages only)",
                "binfarm_emerge_options",
                "online",
            ));
        }
        WaveKind::SlotSwitch => {
            out.push_str(&show_task(&format!(
                "[{} | join(' ')] + binfarm_rollout[binfarm_profile].switch",
                emerge_expression("['--getbinpkgonly', '--noreplace']", "select")
            )));
            out.push_str(&emerge_task(
                "Keep the new slots in the world file",
                "['--getbinpkgonly', '--noreplace']",
                "select",
            ));
            out.push_str(
                "    - name: \"Switch to the new slots\"\n      ansible.builtin.shell: \"{{ item }}\"\n      loop: \"{{ binfarm_rollout[binfarm_profile].switch }}\"\n",
            );
        }
        WaveKind::SlotRemoval => {
            out.push_str(&show_task(&format!(
                "[{} | join(' '), {} | join(' ')]",
                emerge_expression("['--deselect']", "remove"),
                emerge_expression("['--depclean']", "remove")
            )));
            out.push_str(&emerge_task(
                "Drop the old slots from the world file",
                "['--deselect']",
                "remove",
            ));
            out.push_str(&emerge_task(
                "Remove the old slots (depclean: kept if anything still needs them)",
                "['--depclean']",
                "remove",
            ));
        }
    }
    out.push_str(&health_check_task(&inventory.health_check));
    out
}

/// The playbook (YAML): one play per wave, in order.
pub fn render_playbook(plan: &Plan, inventory: &Inventory, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str(&format!(
        "# Run: ansible-playbook -i {INVENTORY_FILE} {PLAYBOOK_FILE}  (add --check for a dry run:\n\
         # emerge and the configured commands do not run in check mode)\n"
    ));
    if plan.waves.is_empty() {
        // A playbook must hold at least one play; this one touches no host.
        out.push_str("- name: \"Nothing to roll out\"\n  hosts: localhost\n  gather_facts: false\n  tasks: []\n");
        return out;
    }
    for wave in &plan.waves {
        out.push('\n');
        out.push_str(&play(wave, plan, inventory));
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> Result<(), RolloutError> {
    let io_error = |source| RolloutError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)?;
    file.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

/// Writes `inventory.yml` and `playbook.yml` into `dir` (created if missing); returns their paths.
pub fn write_ansible(
    dir: &Path,
    plan: &Plan,
    inventory: &Inventory,
    header: &str,
) -> Result<[PathBuf; 2], RolloutError> {
    fs::create_dir_all(dir).map_err(|source| RolloutError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let inventory_path = dir.join(INVENTORY_FILE);
    let playbook_path = dir.join(PLAYBOOK_FILE);
    write_atomically(&inventory_path, &render_inventory(plan, inventory, header))?;
    write_atomically(&playbook_path, &render_playbook(plan, inventory, header))?;
    Ok([inventory_path, playbook_path])
}
