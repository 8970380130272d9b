//! `binfarm client-config`: what a production node needs to install a profile's channel.
//!
//! The output is a POSIX shell script to run as root on the node. It is also the
//! documentation: each part says what it is for. It writes
//! 1. `binrepos.conf/binfarm-<profile>.conf`: the mirror (`sync-uri = URL/<profile>/<channel>`,
//!    `verify-signature = true`, priority, location);
//! 2. a marked block in `make.conf`: the settings that must match the build (CHOST, CFLAGS,
//!    CXXFLAGS, USE, CPU_FLAGS_X86; binary packages whose USE differs are ignored) and
//!    `FEATURES="binpkg-request-signature"`; `package.use/binfarm` when the profile has
//!    per-package USE;
//! 3. the farm's public key, imported into `/etc/portage/gnupg` and trusted ultimately, then
//!    `gpg --check-trustdb` (Portage verifies with `--no-auto-check-trustdb`: without it the
//!    trust is not in effect), and the keyring made readable by all (Portage runs gpg as
//!    nobody when it runs as root).
//!
//! Re-running it replaces what an earlier run wrote.
//!
//! `ftp://` mirrors work as they are: Portage reads the index with Python's FTP client and
//! downloads packages with its FETCHCOMMAND (wget), both logging in anonymously unless the
//! URL names a user. A URL with `user:password@` puts the password in binrepos.conf, so
//! the script makes that file readable by root only.

use std::path::{Path, PathBuf};

use crate::profile::Profile;

use super::{check_name, PublishError};

/// Options of [`client_config`].
#[derive(Debug, Clone)]
pub struct ClientConfigOptions {
    /// The node's configuration root (`/`, or a PORTAGE_CONFIGROOT for a node in a directory).
    pub config_root: PathBuf,
    /// binrepos.conf priority (higher is preferred).
    pub priority: i32,
}

impl Default for ClientConfigOptions {
    fn default() -> Self {
        ClientConfigOptions {
            config_root: PathBuf::from("/"),
            priority: 10,
        }
    }
}

/// Single-quotes `text` for the shell.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Whether the URL carries a password (`scheme://user:password@host/...`).
fn has_password(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `root` + an absolute path.
fn under(root: &Path, path: &str) -> String {
    let joined = root.join(path.trim_start_matches('/'));
    joined.to_string_lossy().into_owned()
}

/// A make.conf value in double quotes (profile values are validated tokens; `"`, `\`, `$`
/// and backquotes are escaped all the same).
fn make_conf_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The script for a node of `profile` following `channel` on the mirror at `mirror_url`
/// (the mirror root: the tree is `<mirror_url>/<profile>/<channel>`). `public_key` is the
/// farm's ASCII-armored public key, `fingerprint` its primary fingerprint (hex).
pub fn client_config(
    profile: &Profile,
    channel: &str,
    mirror_url: &str,
    public_key: &str,
    fingerprint: &str,
    options: &ClientConfigOptions,
) -> Result<String, PublishError> {
    check_name("profile", &profile.name)?;
    check_name("channel", channel)?;
    let url = mirror_url.trim_end_matches('/');
    let scheme_ok = ["http://", "https://", "ftp://", "ftps://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.contains(char::is_whitespace) {
        return Err(PublishError::Config {
            path: PathBuf::from("--mirror"),
            message: format!(
                "{mirror_url:?} is not a mirror URL (http://, https://, ftp://, ftps:// or file://)"
            ),
        });
    }
    if !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) || fingerprint.len() < 32 {
        return Err(PublishError::Config {
            path: PathBuf::from("signing key"),
            message: format!("{fingerprint:?} is not a key fingerprint"),
        });
    }
    let name = &profile.name;
    let repo = format!("binfarm-{name}-{channel}");
    let root = &options.config_root;
    let etc = under(root, "/etc/portage");
    let gnupg = under(root, "/etc/portage/gnupg");
    let location = under(root, &format!("/var/cache/binhost/{repo}"));
    let key_file = format!("binfarm-{}.asc", fingerprint.to_ascii_uppercase());

    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# binfarm client configuration: hw-profile {name:?}, channel {channel:?}\n\
         # Binary packages: {url}/{name}/{channel}\n\
         # Run as root on the production node. The node must use the Gentoo profile\n\
         # {}:{} and the same ebuild repositories ({}) at the same revisions as the\n\
         # build: Portage only takes a binary package whose USE, IUSE and dependencies\n\
         # match the node's.\n\
         set -eu\n\
         ETC_PORTAGE={}\n\
         GNUPG_HOME={}\n\n",
        profile.gentoo_profile_repo,
        profile.gentoo_profile_path,
        profile
            .repositories
            .iter()
            .map(|r| match &r.revision {
                Some(rev) => format!("{}@{rev}", r.name),
                None => r.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        sh_quote(&etc),
        sh_quote(&gnupg),
    ));

    s.push_str(
        "# --- 1. binrepos.conf: where binary packages come from; signatures required ---\n\
         if [ -f \"$ETC_PORTAGE/binrepos.conf\" ]; then\n\
         \techo \"$ETC_PORTAGE/binrepos.conf is a file: move it into a directory of that name first\" >&2\n\
         \texit 1\n\
         fi\n\
         mkdir -p \"$ETC_PORTAGE/binrepos.conf\"\n",
    );
    s.push_str(&format!(
        "cat > \"$ETC_PORTAGE/binrepos.conf/binfarm-{name}.conf\" <<'BINFARM_EOF'\n\
         [{repo}]\n\
         priority = {}\n\
         sync-uri = {url}/{name}/{channel}\n\
         verify-signature = true\n\
         location = {location}\n\
         BINFARM_EOF\n",
        options.priority
    ));
    if has_password(url) {
        s.push_str(&format!(
            "# the mirror URL holds a password: only root may read it\n\
             chmod 0600 \"$ETC_PORTAGE/binrepos.conf/binfarm-{name}.conf\"\n"
        ));
    }
    s.push('\n');

    s.push_str(
        "# --- 2. make.conf: what must match the build, and signature checking ---\n\
         if [ -d \"$ETC_PORTAGE/make.conf\" ]; then\n\
         \tMAKE_CONF=\"$ETC_PORTAGE/make.conf/zz-binfarm\"\n\
         \t: > \"$MAKE_CONF\"\n\
         else\n\
         \tMAKE_CONF=\"$ETC_PORTAGE/make.conf\"\n\
         \ttouch \"$MAKE_CONF\"\n\
         \tsed -i '/^# BEGIN binfarm client-config$/,/^# END binfarm client-config$/d' \"$MAKE_CONF\"\n\
         fi\n\
         cat >> \"$MAKE_CONF\" <<'BINFARM_EOF'\n\
         # BEGIN binfarm client-config\n",
    );
    s.push_str(&format!(
        "# hw-profile {name}: these must be what the packages were built with\n"
    ));
    let cpu_flags = profile.cpu_flags_x86.join(" ");
    let use_flags = profile.use_flags.join(" ");
    for (key, value) in [
        ("CHOST", profile.chost.as_str()),
        ("CFLAGS", profile.cflags.as_str()),
        ("CXXFLAGS", profile.cxxflags.as_str()),
        ("USE", use_flags.as_str()),
        ("CPU_FLAGS_X86", cpu_flags.as_str()),
    ] {
        s.push_str(&format!("{key}={}\n", make_conf_value(value)));
    }
    s.push_str(&format!(
        "# only install binary packages with a good signature from a trusted key\n\
         FEATURES=\"${{FEATURES}} binpkg-request-signature\"\n\
         BINPKG_GPG_VERIFY_GPG_HOME={}\n\
         # the keyring below is managed here (getuto would manage Gentoo's own keys)\n\
         PORTAGE_TRUST_HELPER=\"\"\n\
         # END binfarm client-config\n\
         BINFARM_EOF\n",
        make_conf_value(&gnupg)
    ));
    if !profile.package_use.is_empty() {
        s.push_str(
            "mkdir -p \"$ETC_PORTAGE/package.use\"\n\
             cat > \"$ETC_PORTAGE/package.use/binfarm\" <<'BINFARM_EOF'\n",
        );
        s.push_str(&format!(
            "# hw-profile {name}: per-package USE of the build\n"
        ));
        for (atom, flags) in &profile.package_use {
            s.push_str(&format!("{atom} {}\n", flags.join(" ")));
        }
        s.push_str("BINFARM_EOF\n");
    }
    s.push('\n');

    s.push_str(&format!(
        "# --- 3. the farm's signing key {fingerprint}, trusted for binary packages ---\n\
         mkdir -p \"$GNUPG_HOME\"\n\
         chmod 0700 \"$GNUPG_HOME\"\n\
         cat > \"$GNUPG_HOME/{key_file}\" <<'BINFARM_EOF'\n"
    ));
    s.push_str(public_key.trim_end());
    s.push_str("\nBINFARM_EOF\n");
    // --no-autostart: importing public keys needs no gpg-agent; none is left running.
    s.push_str(&format!(
        "gpg --batch --no-autostart --homedir \"$GNUPG_HOME\" --import \"$GNUPG_HOME/{key_file}\"\n\
         echo '{}:6:' | gpg --batch --no-autostart --homedir \"$GNUPG_HOME\" --import-ownertrust\n\
         # Portage runs gpg with --no-auto-check-trustdb: update the trust database now.\n\
         gpg --batch --no-autostart --homedir \"$GNUPG_HOME\" --check-trustdb\n\
         # Portage (as root) verifies as nobody: the keyring must be readable by all.\n\
         chmod 0755 \"$GNUPG_HOME\"\n\
         for f in \"$GNUPG_HOME\"/*; do if [ -f \"$f\" ]; then chmod 0644 \"$f\"; fi; done\n\
         gpgconf --homedir \"$GNUPG_HOME\" --kill all >/dev/null 2>&1 || true\n\
         echo 'binfarm: node configured for {name}/{channel}'\n",
        fingerprint.to_ascii_uppercase()
    ));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/x86-64-v3.toml");
        Profile::load(&path).unwrap()
    }

    const FINGERPRINT: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

    #[test]
    fn ftp_mirror_urls_go_into_binrepos_conf_as_given() {
        let script = client_config(
            &profile(),
            "stable",
            "ftp://mirror.example.com:2121/pub/",
            "KEY",
            FINGERPRINT,
            &ClientConfigOptions::default(),
        )
        .unwrap();
        assert!(script.contains("sync-uri = ftp://mirror.example.com:2121/pub/x86-64-v3/stable\n"));
        assert!(!script.contains("chmod 0600 \"$ETC_PORTAGE/binrepos.conf"));
    }

    #[test]
    fn a_password_in_the_url_makes_binrepos_conf_root_only() {
        let script = client_config(
            &profile(),
            "stable",
            "ftp://nodes:s3cret@mirror.example.com/pub",
            "KEY",
            FINGERPRINT,
            &ClientConfigOptions::default(),
        )
        .unwrap();
        assert!(script
            .contains("sync-uri = ftp://nodes:s3cret@mirror.example.com/pub/x86-64-v3/stable"));
        assert!(
            script.contains("chmod 0600 \"$ETC_PORTAGE/binrepos.conf/binfarm-x86-64-v3.conf\"\n")
        );
        assert!(has_password("https://u:p@h/x"));
        assert!(!has_password("ftp://user@h/x"));
        assert!(!has_password("http://h/a:b@c"));
    }
}
