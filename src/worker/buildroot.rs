//! One build root per profile: the Portage config rendered from the profile plus the
//! directories and links Portage needs, and the environment every Portage command of that
//! root runs with.
//!
//! Host mode (tests, Debian workers) — the layout from the reference recipe:
//! ```text
//! DIR/                    PORTAGE_CONFIGROOT (etc/portage/...)
//! DIR/root/               ROOT = SYSROOT (deps get installed here; binpkgs contain /usr/...)
//! DIR/broot/              PORTAGE_OVERRIDE_EPREFIX: private build-host config, so Portage never
//!                         reads or writes the host's /etc/portage, /var/cache/...
//! DIR/broot/share/portage/config/{make.globals,binrepos.conf,sets/portage.conf} -> venv
//! DIR/compat-bin/gtar     -> tar (Portage's unpack calls gtar)
//! DIR/pkgdir/ DIR/tmp/ DIR/log/ DIR/distfiles/   (PKGDIR and DISTDIR can be elsewhere)
//! ```
//! Chroot mode (production workers): DIR is a Gentoo stage3; the config is rendered into
//! DIR/etc/portage with the usual paths and emerge runs as `chroot DIR emerge ...`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::profile::{self, BinpkgFormat, ConfigLayout, Profile, RenderSettings};

use super::WorkerError;

/// How Portage commands of a build root run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunMode {
    /// Portage from a Python venv on this host (ROOT/PORTAGE_CONFIGROOT layout).
    #[default]
    Host,
    /// `chroot DIR` into a Gentoo stage3 that has its own Portage.
    Chroot,
}

#[derive(Debug, Clone, Default)]
pub struct BuildRootOptions {
    pub mode: RunMode,
    /// The venv holding Portage (host mode): `bin/emerge`, `share/portage/config/`.
    pub venv: PathBuf,
    /// Repository locations that replace the profile's ones (e.g. a copy with Manifests).
    pub repo_locations: std::collections::BTreeMap<String, PathBuf>,
    pub distdir: Option<PathBuf>,
    pub pkgdir: Option<PathBuf>,
    /// Overrides the profile's binpkg format (tests build xpak this way).
    pub binpkg_format: Option<BinpkgFormat>,
    /// Portage signs each gpkg it writes with this gpg key.
    pub signing: Option<profile::Signing>,
}

/// A prepared build root.
#[derive(Debug, Clone)]
pub struct BuildRoot {
    pub profile: Profile,
    pub dir: PathBuf,
    pub mode: RunMode,
    pub venv: PathBuf,
    pub binpkg_format: BinpkgFormat,
    /// Paths as Portage sees them (inside the chroot in chroot mode).
    pub paths: profile::render::RenderedPaths,
}

const VENV_CONFIG_FILES: [&str; 3] = ["make.globals", "binrepos.conf", "sets/portage.conf"];

fn render_settings(options: &BuildRootOptions) -> RenderSettings {
    RenderSettings {
        layout: match options.mode {
            RunMode::Host => ConfigLayout::Host,
            RunMode::Chroot => ConfigLayout::Chroot,
        },
        repo_locations: options.repo_locations.clone(),
        distdir: options.distdir.clone(),
        pkgdir: options.pkgdir.clone(),
        binpkg_format: options.binpkg_format,
        signing: options.signing.clone(),
    }
}

impl BuildRoot {
    /// Creates or updates the build root of `profile` in `dir` (idempotent: re-rendering
    /// keeps ROOT, PKGDIR and the installed packages).
    pub fn prepare(
        profile: &Profile,
        dir: &Path,
        options: &BuildRootOptions,
    ) -> Result<BuildRoot, WorkerError> {
        let root = Self::layout(profile, dir, options)?;
        profile::render(profile, &render_settings(options), &root.dir)?;
        root.create_dirs()?;
        Ok(root)
    }

    /// Like `prepare`, but a root whose config already exists is used as it is: local
    /// changes to its config (a production node's binrepos.conf and make.conf lines from
    /// `binfarm client-config`) are kept.
    pub fn open_or_prepare(
        profile: &Profile,
        dir: &Path,
        options: &BuildRootOptions,
    ) -> Result<BuildRoot, WorkerError> {
        let root = Self::layout(profile, dir, options)?;
        let make_conf = root.host_path(&root.paths.config_root.join("etc/portage/make.conf"));
        if !make_conf.is_file() {
            profile::render(profile, &render_settings(options), &root.dir)?;
        }
        root.create_dirs()?;
        Ok(root)
    }

    /// The root's paths, without touching the disk.
    fn layout(
        profile: &Profile,
        dir: &Path,
        options: &BuildRootOptions,
    ) -> Result<BuildRoot, WorkerError> {
        let dir = std::path::absolute(dir).map_err(|source| WorkerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let paths = profile::render::RenderedPaths::for_dir(&render_settings(options), &dir);
        Ok(BuildRoot {
            profile: profile.clone(),
            dir,
            mode: options.mode.clone(),
            venv: options.venv.clone(),
            binpkg_format: options.binpkg_format.unwrap_or(profile.binpkg_format),
            paths,
        })
    }

    /// The directories Portage expects to exist, and (host mode) the links into the venv.
    fn create_dirs(&self) -> Result<(), WorkerError> {
        let p = &self.paths;
        let mut dirs = vec![
            p.pkgdir.clone(),
            p.distdir.clone(),
            p.tmpdir.clone(),
            p.build_logdir.clone(),
        ];
        if self.mode == RunMode::Host {
            dirs.push(p.root.clone());
            dirs.push(self.dir.join("home"));
            if let Some(broot) = &p.broot {
                dirs.push(broot.join("var/tmp"));
                dirs.push(broot.join("var/cache/binpkgs"));
            }
        }
        for d in dirs {
            let host_dir = self.host_path(&d);
            std::fs::create_dir_all(&host_dir).map_err(|source| WorkerError::Io {
                path: host_dir,
                source,
            })?;
        }
        if self.mode == RunMode::Host {
            self.link_venv_files()?;
        }
        Ok(())
    }

    fn link_venv_files(&self) -> Result<(), WorkerError> {
        let emerge = self.venv.join("bin/emerge");
        if !emerge.is_file() {
            return Err(WorkerError::NoPortage {
                venv: self.venv.clone(),
            });
        }
        let Some(broot) = &self.paths.broot else {
            return Ok(());
        };
        for file in VENV_CONFIG_FILES {
            let target = self.venv.join("share/portage/config").join(file);
            profile::render::replace_symlink(
                &target,
                &broot.join("share/portage/config").join(file),
            )?;
        }
        let tar = find_in_path("tar").unwrap_or_else(|| PathBuf::from("/bin/tar"));
        profile::render::replace_symlink(&tar, &self.dir.join("compat-bin/gtar"))?;
        Ok(())
    }

    /// A path Portage uses, as seen from this host.
    pub fn host_path(&self, portage_path: &Path) -> PathBuf {
        match self.mode {
            RunMode::Host => portage_path.to_path_buf(),
            RunMode::Chroot => self
                .dir
                .join(portage_path.strip_prefix("/").unwrap_or(portage_path)),
        }
    }

    /// PKGDIR on this host.
    pub fn pkgdir(&self) -> PathBuf {
        self.host_path(&self.paths.pkgdir)
    }

    /// The complete environment of a Portage command in this root (nothing is inherited).
    pub fn environment(&self) -> Vec<(String, OsString)> {
        let mut env: Vec<(String, OsString)> = vec![
            ("TERM".into(), "dumb".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("NOCOLOR".into(), "true".into()),
        ];
        match self.mode {
            RunMode::Host => {
                let mut path = OsString::from(self.dir.join("compat-bin"));
                path.push(":");
                path.push(self.venv.join("bin"));
                path.push(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
                env.push(("HOME".into(), self.dir.join("home").into()));
                env.push(("PATH".into(), path));
                env.push(("EPREFIX".into(), "".into()));
                if let Some(broot) = &self.paths.broot {
                    env.push(("PORTAGE_OVERRIDE_EPREFIX".into(), broot.into()));
                }
                env.push((
                    "PORTAGE_CONFIGROOT".into(),
                    self.paths.config_root.clone().into(),
                ));
                env.push(("ROOT".into(), self.paths.root.clone().into()));
                env.push(("SYSROOT".into(), self.paths.root.clone().into()));
            }
            RunMode::Chroot => {
                env.push(("HOME".into(), "/root".into()));
                env.push((
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ));
            }
        }
        env
    }

    /// A Portage command (`emerge`, `emaint`, `ebuild`, `egencache`, `portageq`, ...) set up to
    /// run in this build root, with a cleared environment plus `extra_env`.
    pub fn portage_command<I, S>(
        &self,
        program: &str,
        args: I,
        extra_env: &[(String, String)],
    ) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = match self.mode {
            RunMode::Host => Command::new(self.venv.join("bin").join(program)),
            RunMode::Chroot => {
                let mut c = Command::new("chroot");
                c.arg(&self.dir).arg(program);
                c
            }
        };
        cmd.args(args);
        cmd.env_clear();
        for (k, v) in self.environment() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The python of the venv (host mode), for helpers that use Portage's API.
    pub fn python(&self) -> PathBuf {
        match self.mode {
            RunMode::Host => self.venv.join("bin/python"),
            RunMode::Chroot => PathBuf::from("python3"),
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
