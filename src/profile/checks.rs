//! Validation of a parsed profile file: every check adds a [`Problem`]; the caller gets all of
//! them at once so `binfarm profile check` shows everything wrong in one run.

use std::path::{Path, PathBuf};

use super::{Problem, Profile, RawProfile};

/// Turns a TOML/serde error (syntax, unknown key, wrong type) into a one-line problem with the
/// line number and the dotted key it points at.
pub(super) fn toml_problem(path: &Path, text: &str, err: &toml::de::Error) -> Problem {
    let message = err.message().trim().replace('\n', " ");
    let (line, key) = match err.span() {
        Some(span) if span.start < text.len() => {
            let line_no = text[..span.start].matches('\n').count() + 1;
            (Some(line_no), key_at(text, span.start))
        }
        _ => (
            None,
            missing_field_key(&message).unwrap_or_else(|| "(file)".to_string()),
        ),
    };
    Problem {
        path: path.to_path_buf(),
        line,
        key,
        message,
    }
}

/// `missing field `chost`` -> `chost`.
fn missing_field_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// The dotted key at byte offset `pos`: the nearest table header above it, plus the key on the
/// line (if the line is `key = value`).
fn key_at(text: &str, pos: usize) -> String {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = text[line_start..line_end].trim();
    let mut table = String::new();
    for prev in text[..line_start].lines().rev() {
        let prev = prev.trim();
        if prev.starts_with('[') {
            table = prev
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            break;
        }
    }
    let key = if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    } else if let Some((k, _)) = line.split_once('=') {
        k.trim().trim_matches('"').to_string()
    } else {
        String::new()
    };
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(file)".to_string(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

struct Checker<'a> {
    path: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: self.path.to_path_buf(),
            line: None,
            key: key.into(),
            message: message.into(),
        });
    }

    fn required(&mut self, key: &str, value: Option<String>, what: &str) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v,
            Some(_) => {
                self.add(key, format!("empty (required: {what})"));
                String::new()
            }
            None => {
                self.add(key, format!("missing (required: {what})"));
                String::new()
            }
        }
    }
}

pub(super) fn validate(
    path: &Path,
    base_dir: &Path,
    raw: RawProfile,
) -> Result<Profile, Vec<Problem>> {
    let mut c = Checker {
        path,
        problems: Vec::new(),
    };

    let name = c.required(
        "name",
        raw.name,
        "the profile's name, equal to the file name",
    );
    if !name.is_empty() {
        if !is_token(&name, |ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)) {
            c.add(
                "name",
                format!("{name:?}: only letters, digits, '.', '_' and '-' are allowed"),
            );
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !stem.is_empty() && stem != name {
            c.add(
                "name",
                format!("{name:?} differs from the file name {stem:?}"),
            );
        }
    }

    let chost = c.required(
        "chost",
        raw.chost,
        "the target triple, e.g. x86_64-pc-linux-gnu",
    );
    if !chost.is_empty() && !is_chost(&chost) {
        c.add(
            "chost",
            format!("{chost:?} is not a target triple like x86_64-pc-linux-gnu"),
        );
    }

    let cflags = c.required(
        "cflags",
        raw.cflags,
        "compiler flags with an explicit -march=...",
    );
    if !cflags.is_empty() {
        check_compiler_flags(&mut c, "cflags", &cflags);
        if !cflags.split_whitespace().any(|f| f.starts_with("-march=")) {
            c.add(
                "cflags",
                "no -march=...: name the CPU level explicitly (e.g. -march=x86-64-v3)",
            );
        }
    }
    let cxxflags = match raw.cxxflags {
        Some(flags) => {
            check_compiler_flags(&mut c, "cxxflags", &flags);
            flags
        }
        None => cflags.clone(),
    };
    check_make_conf_value(&mut c, "ldflags", &raw.ldflags);
    if let Some(makeopts) = &raw.makeopts {
        check_make_conf_value(&mut c, "makeopts", makeopts);
    }
    check_make_conf_value(&mut c, "description", &raw.description);
    for (key, value) in [("cc", &raw.cc), ("cxx", &raw.cxx)] {
        if let Some(v) = value {
            if v.trim().is_empty() {
                c.add(key, "empty (leave it out to use the toolchain's default)");
            }
            check_make_conf_value(&mut c, key, v);
        }
    }

    for flag in &raw.use_flags {
        if !is_use_flag(flag.strip_prefix('-').unwrap_or(flag)) {
            c.add("use", format!("{flag:?} is not a USE flag"));
        }
    }
    for flag in &raw.cpu_flags_x86 {
        if !is_token(flag, |ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'
        }) {
            c.add(
                "cpu_flags_x86",
                format!("{flag:?} is not a CPU flag name like avx2 or sse4_2"),
            );
        }
    }
    for feature in &raw.features {
        let bare = feature.strip_prefix('-').unwrap_or(feature);
        if !is_token(bare, |ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'
        }) {
            c.add("features", format!("{feature:?} is not a FEATURES token"));
        }
    }

    // Repositories
    let mut repositories = Vec::new();
    if raw.repositories.is_empty() {
        c.add(
            "repository",
            "missing (at least one [[repository]] with name and location)",
        );
    }
    for (i, repo) in raw.repositories.into_iter().enumerate() {
        let key = format!("repository[{i}]");
        if !is_repo_name(&repo.name) {
            c.add(
                format!("{key}.name"),
                format!("{:?} is not a repository name", repo.name),
            );
        }
        if repositories
            .iter()
            .any(|r: &super::Repository| r.name == repo.name)
        {
            c.add(
                format!("{key}.name"),
                format!("{:?} is listed twice", repo.name),
            );
        }
        if repo.location.as_os_str().is_empty() {
            c.add(format!("{key}.location"), "empty");
        }
        if let Some(rev) = &repo.revision {
            if rev.is_empty() || rev.chars().any(char::is_whitespace) {
                c.add(
                    format!("{key}.revision"),
                    format!("{rev:?} is not a revision"),
                );
            }
        }
        let location = resolve(base_dir, &repo.location);
        repositories.push(super::Repository { location, ..repo });
    }

    // Gentoo profile: REPO:PATH
    let gentoo_profile = c.required(
        "gentoo_profile",
        raw.gentoo_profile,
        "REPO:PATH, e.g. gentoo:default/linux/amd64/23.0",
    );
    let (gentoo_profile_repo, gentoo_profile_path) = match gentoo_profile.split_once(':') {
        Some((repo, p)) => (repo.to_string(), p.to_string()),
        None => {
            if !gentoo_profile.is_empty() {
                c.add(
                    "gentoo_profile",
                    format!("{gentoo_profile:?} is not REPO:PATH"),
                );
            }
            (String::new(), String::new())
        }
    };
    if !gentoo_profile_repo.is_empty()
        && !repositories.iter().any(|r| r.name == gentoo_profile_repo)
    {
        c.add(
            "gentoo_profile",
            format!("repository {gentoo_profile_repo:?} is not one of the [[repository]] entries"),
        );
    }
    if gentoo_profile.contains(':')
        && (gentoo_profile_path.is_empty()
            || gentoo_profile_path.starts_with('/')
            || gentoo_profile_path
                .split('/')
                .any(|part| part == ".." || part.is_empty()))
    {
        c.add(
            "gentoo_profile",
            format!("{gentoo_profile_path:?} is not a relative profile path"),
        );
    }

    // Package set and per-package USE
    for atom in &raw.packages.atoms {
        if let Err(msg) = check_atom(atom) {
            c.add("packages.atoms", format!("{atom:?}: {msg}"));
        }
    }
    let world_file = raw.packages.world_file.map(|w| resolve(base_dir, &w));
    if let Some(w) = &world_file {
        if !w.is_file() {
            c.add(
                "packages.world_file",
                format!("{} does not exist", w.display()),
            );
        }
    }
    for (atom, flags) in &raw.package_use {
        let key = format!("package_use.{atom:?}");
        if let Err(msg) = check_atom(atom) {
            c.add(&key, format!("{atom:?}: {msg}"));
        }
        if flags.is_empty() {
            c.add(&key, "no USE flags");
        }
        for flag in flags {
            if !is_use_flag(flag.strip_prefix('-').unwrap_or(flag)) {
                c.add(&key, format!("{flag:?} is not a USE flag"));
            }
        }
    }

    // distcc
    if let Some(distcc) = &raw.distcc {
        if distcc.hosts.is_empty() {
            c.add(
                "distcc.hosts",
                "empty (remove [distcc] to build without distcc)",
            );
        }
        for host in &distcc.hosts {
            if let Err(msg) = check_distcc_host(host) {
                c.add("distcc.hosts", format!("{host:?}: {msg}"));
            }
        }
    }

    for flag in &raw.worker.cpu_flags {
        if !is_token(flag, |ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'
        }) {
            c.add(
                "worker.cpu_flags",
                format!("{flag:?} is not a /proc/cpuinfo flag name"),
            );
        }
    }
    for label in &raw.worker.labels {
        if !is_token(label, |ch| {
            ch.is_ascii_alphanumeric() || "._-=".contains(ch)
        }) {
            c.add(
                "worker.labels",
                format!("{label:?}: only letters, digits and . _ - = are allowed"),
            );
        }
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Profile {
        source: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        name,
        description: raw.description,
        chost,
        cflags,
        cxxflags,
        ldflags: raw.ldflags,
        makeopts: raw.makeopts,
        cc: raw.cc,
        cxx: raw.cxx,
        use_flags: raw.use_flags,
        cpu_flags_x86: raw.cpu_flags_x86,
        gentoo_profile_repo,
        gentoo_profile_path,
        binpkg_format: raw.binpkg_format,
        features: raw.features,
        repositories,
        package_use: raw.package_use,
        packages: super::PackageSet {
            atoms: raw.packages.atoms,
            world_file,
        },
        distcc: raw.distcc,
        worker: raw.worker,
    })
}

/// `p` relative to the profile's directory, with `.` and `..` resolved lexically (the
/// path may not exist on this host, e.g. a location inside a stage3).
fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn is_token(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(allowed)
}

fn is_chost(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            is_token(p, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
            })
        })
}

/// Values end up inside double quotes in make.conf: refuse what would break out of them.
fn check_make_conf_value(c: &mut Checker<'_>, key: &str, value: &str) {
    if let Some(bad) = value
        .chars()
        .find(|ch| matches!(ch, '"' | '\\' | '`' | '\n' | '\r'))
    {
        c.add(
            key,
            format!("contains {bad:?}, which cannot be written into make.conf"),
        );
    } else if value.contains("$(") {
        c.add(key, "contains a command substitution \"$(\"");
    }
}

fn check_compiler_flags(c: &mut Checker<'_>, key: &str, flags: &str) {
    check_make_conf_value(c, key, flags);
    for flag in flags.split_whitespace() {
        if matches!(flag, "-march=native" | "-mtune=native" | "-mcpu=native") {
            c.add(
                key,
                format!(
                    "{flag} is refused: workers and production CPUs differ, and distcc silently \
                     compiles locally with it; name the CPU level (e.g. -march=x86-64-v3)"
                ),
            );
        }
    }
}

fn is_use_flag(s: &str) -> bool {
    crate::atom::validate_use_flag(s).is_ok()
}

fn is_repo_name(s: &str) -> bool {
    crate::atom::validate_repo_name(s).is_ok()
}

/// A package dependency atom as a profile may name it (no blockers), per crate::atom.
pub(super) fn check_atom(atom: &str) -> Result<(), String> {
    match crate::atom::Atom::parse(atom) {
        Ok(parsed) if parsed.blocker().is_some() => Err("blockers are not allowed here".into()),
        Ok(_) => Ok(()),
        Err(crate::atom::AtomError::Atom { problem, .. }) => Err(problem),
        Err(other) => Err(other.to_string()),
    }
}

/// One entry of DISTCC_HOSTS (see distcc(1) "HOST SPECIFICATIONS").
pub(super) fn check_distcc_host(spec: &str) -> Result<(), String> {
    if spec == "--randomize" {
        return Ok(());
    }
    for opt in ["--localslots=", "--localslots_cpp="] {
        if let Some(n) = spec.strip_prefix(opt) {
            return positive(n)
                .map(|_| ())
                .map_err(|_| format!("{opt}N needs a positive number"));
        }
    }
    if spec.is_empty() || spec.chars().any(char::is_whitespace) {
        return Err("one host per entry, without spaces".into());
    }
    let (head, options) = spec
        .split_once(',')
        .map_or((spec, None), |(h, o)| (h, Some(o)));
    if let Some(options) = options {
        for opt in options.split(',') {
            if !(matches!(opt, "lzo" | "cpp" | "auth")
                || opt.strip_prefix("auth=").is_some_and(|s| !s.is_empty()))
            {
                return Err(format!("unknown option {opt:?} (lzo, cpp, auth[=SERVICE])"));
            }
        }
    }
    let (host_port, limit) = head
        .split_once('/')
        .map_or((head, None), |(h, l)| (h, Some(l)));
    if let Some(limit) = limit {
        positive(limit).map_err(|_| format!("job limit {limit:?} is not a positive number"))?;
    }
    if host_port == "localhost" {
        return Ok(());
    }
    // ssh forms: @HOST, USER@HOST (optionally :COMMAND)
    if let Some((user, host)) = host_port.split_once('@') {
        let host = host.split_once(':').map_or(host, |(h, _)| h);
        if user.contains([':', '/']) || !is_hostname(host) {
            return Err(format!("{host_port:?} is not [USER]@HOST"));
        }
        return Ok(());
    }
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unterminated [IPv6 address]")?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => (
                None,
                Some(after.strip_prefix(':').ok_or("expected :PORT after ]")?),
            ),
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host_port), None),
        }
    };
    if let Some(host) = host {
        if !is_hostname(host) {
            return Err(format!("{host:?} is not a host name or address"));
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("port {port:?} is not 1-65535")),
        }
    }
    Ok(())
}

fn positive(s: &str) -> Result<u32, ()> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(()),
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}
