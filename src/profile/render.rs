//! Rendering a profile into a Portage config root with the handlebars templates in templates/.
//!
//! Two layouts: `Host` (Portage runs on this host with ROOT/PORTAGE_CONFIGROOT pointing into
//! the directory, the layout the tests use) and `Chroot` (the directory is a Gentoo stage3 and
//! Portage runs inside it with the usual paths).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::json;

use super::{BinpkgFormat, Profile, ProfileError};

const MAKE_CONF: &str = include_str!("../../templates/make.conf.hbs");
const REPOS_CONF: &str = include_str!("../../templates/repos.conf.hbs");
const PACKAGE_USE: &str = include_str!("../../templates/package.use.hbs");
const BROOT_MAKE_CONF: &str = include_str!("../../templates/broot-make.conf.hbs");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigLayout {
    /// ROOT = DIR/root, PORTAGE_CONFIGROOT = DIR, build-host prefix DIR/broot; every path
    /// lives under DIR.
    #[default]
    Host,
    /// DIR is a stage3 chroot: config in DIR/etc/portage, paths as seen inside the chroot.
    Chroot,
}

/// Portage-side binpkg signing with gpg (the farm's own signer may sign later instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// GNUPGHOME holding the secret key.
    pub gpg_home: PathBuf,
    /// Full fingerprint (hex) of the signing key.
    pub key_fingerprint: String,
    /// World-readable GNUPGHOME that trusts the key (Portage verifies what it just signed).
    pub verify_home: PathBuf,
    /// flock(1) lock file serialising gpg calls.
    pub lock_file: PathBuf,
}

/// Where things go; `None` means the layout's default.
#[derive(Debug, Clone, Default)]
pub struct RenderSettings {
    pub layout: ConfigLayout,
    /// Repository locations that replace the profile's (e.g. a test copy with Manifests).
    pub repo_locations: BTreeMap<String, PathBuf>,
    pub distdir: Option<PathBuf>,
    pub pkgdir: Option<PathBuf>,
    pub binpkg_format: Option<BinpkgFormat>,
    pub signing: Option<Signing>,
}

/// The paths a rendered config uses (as Portage sees them: inside the chroot for `Chroot`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderedPaths {
    pub config_root: PathBuf,
    pub root: PathBuf,
    /// The build-host prefix (PORTAGE_OVERRIDE_EPREFIX); only for the host layout.
    pub broot: Option<PathBuf>,
    pub pkgdir: PathBuf,
    pub distdir: PathBuf,
    pub tmpdir: PathBuf,
    pub logdir: PathBuf,
    pub build_logdir: PathBuf,
}

impl RenderedPaths {
    /// The paths a config rendered into `dir` (absolute) with `settings` refers to.
    pub fn for_dir(settings: &RenderSettings, dir: &Path) -> RenderedPaths {
        if settings.layout == ConfigLayout::Host {
            RenderedPaths {
                config_root: dir.to_path_buf(),
                root: dir.join("root"),
                broot: Some(dir.join("broot")),
                pkgdir: settings
                    .pkgdir
                    .clone()
                    .unwrap_or_else(|| dir.join("pkgdir")),
                distdir: settings
                    .distdir
                    .clone()
                    .unwrap_or_else(|| dir.join("distfiles")),
                tmpdir: dir.join("tmp"),
                logdir: dir.join("log"),
                build_logdir: dir.join("log/build"),
            }
        } else {
            RenderedPaths {
                config_root: PathBuf::from("/"),
                root: PathBuf::from("/"),
                broot: None,
                pkgdir: settings
                    .pkgdir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/var/cache/binpkgs")),
                distdir: settings
                    .distdir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/var/cache/distfiles")),
                tmpdir: PathBuf::from("/var/tmp"),
                logdir: PathBuf::from("/var/log"),
                build_logdir: PathBuf::from("/var/log/portage"),
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub paths: RenderedPaths,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    pub binpkg_format: BinpkgFormat,
}

fn handlebars() -> Result<Handlebars<'static>, ProfileError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper(
        "join",
        Box::new(
            |h: &handlebars::Helper<'_>,
             _: &Handlebars<'_>,
             _: &handlebars::Context,
             _: &mut handlebars::RenderContext<'_, '_>,
             out: &mut dyn handlebars::Output|
             -> handlebars::HelperResult {
                let words: Vec<String> = h
                    .param(0)
                    .and_then(|p| p.value().as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.write(&words.join(" "))?;
                Ok(())
            },
        ),
    );
    for (name, text) in [
        ("make.conf", MAKE_CONF),
        ("repos.conf", REPOS_CONF),
        ("package.use", PACKAGE_USE),
        ("broot-make.conf", BROOT_MAKE_CONF),
    ] {
        hb.register_template_string(name, text)
            .map_err(|e| ProfileError::Template {
                template: format!("templates/{name}.hbs"),
                message: e.to_string(),
            })?;
    }
    Ok(hb)
}

/// Writes a complete Portage config root for `profile` into `dir`: etc/portage/{make.conf,
/// repos.conf/binfarm.conf, package.use/binfarm, make.profile}, and for the host layout the
/// build-host prefix broot/etc/portage/ too. Returns the paths the config refers to.
pub fn render(
    profile: &Profile,
    settings: &RenderSettings,
    dir: &Path,
) -> Result<Rendered, ProfileError> {
    let dir = std::path::absolute(dir).map_err(|source| ProfileError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let host = settings.layout == ConfigLayout::Host;
    let paths = RenderedPaths::for_dir(settings, &dir);
    let repositories: Vec<_> = profile
        .repositories
        .iter()
        .map(|r| {
            let location = settings.repo_locations.get(&r.name).unwrap_or(&r.location);
            json!({"name": r.name, "location": location, "revision": r.revision})
        })
        .collect();
    let Some(main) = profile.main_repository() else {
        return Err(ProfileError::Invalid(vec![super::Problem {
            path: profile.source.clone(),
            line: None,
            key: "gentoo_profile".into(),
            message: format!(
                "repository {:?} is not one of the [[repository]] entries",
                profile.gentoo_profile_repo
            ),
        }]));
    };
    let main_repo = &main.name;
    let main_location = settings
        .repo_locations
        .get(main_repo)
        .unwrap_or(&main.location)
        .clone();
    let profile_dir = main_location
        .join("profiles")
        .join(&profile.gentoo_profile_path);
    let binpkg_format = settings.binpkg_format.unwrap_or(profile.binpkg_format);
    let package_use: Vec<_> = profile
        .package_use
        .iter()
        .map(|(atom, flags)| json!({"atom": atom, "flags": flags}))
        .collect();
    let data = json!({
        "profile": profile,
        "paths": paths,
        "host_layout": host,
        "binpkg_format": binpkg_format.as_str(),
        "signing": settings.signing.as_ref().map(|s| json!({
            "gpg_home": s.gpg_home, "key_fingerprint": s.key_fingerprint,
            "verify_home": s.verify_home, "lock_file": s.lock_file,
        })),
        "distcc": profile.distcc,
        "repositories": repositories,
        "main_repo": main_repo,
        "package_use": package_use,
    });

    let hb = handlebars()?;
    let mut files = Vec::new();
    let mut config_dirs = vec![dir.join("etc/portage")];
    if host {
        config_dirs.push(dir.join("broot/etc/portage"));
    }
    for (i, etc) in config_dirs.iter().enumerate() {
        let is_broot = i == 1;
        let make_conf = if is_broot {
            "broot-make.conf"
        } else {
            "make.conf"
        };
        write_file(
            &etc.join("make.conf"),
            &render_one(&hb, make_conf, &data)?,
            &mut files,
        )?;
        write_file(
            &etc.join("repos.conf/binfarm.conf"),
            &render_one(&hb, "repos.conf", &data)?,
            &mut files,
        )?;
        if !is_broot {
            write_file(
                &etc.join("package.use/binfarm"),
                &render_one(&hb, "package.use", &data)?,
                &mut files,
            )?;
        }
        replace_symlink(&profile_dir, &etc.join("make.profile"))?;
        files.push(etc.join("make.profile"));
    }
    Ok(Rendered {
        paths,
        files,
        binpkg_format,
    })
}

fn render_one(
    hb: &Handlebars<'_>,
    name: &str,
    data: &serde_json::Value,
) -> Result<String, ProfileError> {
    hb.render(name, data).map_err(|e| ProfileError::Template {
        template: format!("templates/{name}.hbs"),
        message: e.to_string(),
    })
}

fn write_file(path: &Path, text: &str, files: &mut Vec<PathBuf>) -> Result<(), ProfileError> {
    write_atomic(path, text.as_bytes()).map_err(|source| ProfileError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    files.push(path.to_path_buf());
    Ok(())
}

/// A temporary name next to `path`, unique per process and call, so concurrent renders of
/// the same root (several test binaries, a worker re-rendering) never share a temp file.
fn unique_temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".binfarm-tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` by temp file + rename, so a concurrent reader (emerge) never sees
/// a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = unique_temp_name(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Points `link` at `target`, atomically (new link under a temp name, renamed over the old).
pub(crate) fn replace_symlink(target: &Path, link: &Path) -> Result<(), ProfileError> {
    let werr = |source| ProfileError::Write {
        path: link.to_path_buf(),
        source,
    };
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    // rename() cannot replace a real directory with a link.
    if let Ok(m) = std::fs::symlink_metadata(link) {
        if m.is_dir() {
            std::fs::remove_dir_all(link).map_err(werr)?;
        }
    }
    let tmp = unique_temp_name(link);
    std::os::unix::fs::symlink(target, &tmp).map_err(werr)?;
    std::fs::rename(&tmp, link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })
}
