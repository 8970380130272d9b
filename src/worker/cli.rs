//! The `binfarm profile`, `binfarm build` and `binfarm plan` commands (main.rs only parses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::profile::{self, BinpkgFormat, ConfigLayout, Profile, RenderSettings};

use super::{
    run_build, BuildRequest, BuildRoot, BuildRootOptions, BuildStatus, RunMode, WorkerError,
};

/// Where profiles and Portage are found (shared by the commands).
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// Profile name (looked up in --profiles-dir) or path to a .toml file.
    #[arg(long)]
    pub profile: String,
    #[arg(long, default_value = "profiles")]
    pub profiles_dir: PathBuf,
    /// Replace a repository's location: NAME=PATH (e.g. a checkout with Manifests).
    #[arg(long = "repo", value_name = "NAME=PATH")]
    pub repos: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Profile name (in --dir) or path to a .toml file.
    pub profile: String,
    /// The config root to write (created if missing).
    pub dir: PathBuf,
    #[arg(long, default_value = "profiles")]
    pub profiles_dir: PathBuf,
    /// Render for a stage3 chroot at DIR (paths as seen inside it) instead of this host.
    #[arg(long)]
    pub chroot: bool,
    #[arg(long)]
    pub pkgdir: Option<PathBuf>,
    #[arg(long)]
    pub distdir: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Build root directory (default: .binfarm/roots/<profile>).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// The venv with Portage.
    #[arg(long, env = "BINFARM_VENV", default_value = ".venv")]
    pub venv: PathBuf,
    /// Run emerge inside the build root as a chroot (a Gentoo stage3).
    #[arg(long)]
    pub chroot: bool,
    #[arg(long)]
    pub pkgdir: Option<PathBuf>,
    #[arg(long)]
    pub distdir: Option<PathBuf>,
    /// Override the profile's binpkg format.
    #[arg(long, value_parser = ["gpkg", "xpak"])]
    pub format: Option<String>,
    /// Total timeout in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    pub timeout: u64,
    /// Kill the build after this many seconds without output.
    #[arg(long, default_value_t = 3600)]
    pub max_silent: u64,
    /// Log size cap in MiB.
    #[arg(long, default_value_t = 64)]
    pub log_cap_mib: u64,
    /// Do not use existing binpkgs (no --usepkg).
    #[arg(long)]
    pub no_usepkg: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(required = true)]
    pub atoms: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    #[arg(long, env = "BINFARM_VENV", default_value = ".venv")]
    pub venv: PathBuf,
    #[arg(long)]
    pub distdir: Option<PathBuf>,
    /// Consider existing binpkgs (--usepkg).
    #[arg(long)]
    pub usepkg: bool,
    /// Plan the whole dependency closure (--emptytree).
    #[arg(long)]
    pub emptytree: bool,
    /// Atoms or sets (`@profile` is the profile's package set).
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// `binfarm profile check`: exit 0 only when every profile is valid.
pub fn profile_check(dir: &Path) -> Result<ExitCode, WorkerError> {
    let report = profile::check_dir(dir)?;
    for p in &report.problems {
        eprintln!("{p}");
    }
    for e in &report.unreadable {
        eprintln!("{e}");
    }
    for p in &report.valid {
        println!("ok: {} ({})", p.name, p.source.display());
    }
    if report.ok() && !report.valid.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        if report.valid.is_empty() && report.problems.is_empty() {
            eprintln!("{}: no profiles (*.toml) found", dir.display());
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `binfarm profile render P DIR`.
pub fn profile_render(args: &RenderArgs) -> Result<ExitCode, WorkerError> {
    let profile = Profile::find(&args.profile, &args.profiles_dir)?;
    let settings = RenderSettings {
        layout: if args.chroot {
            ConfigLayout::Chroot
        } else {
            ConfigLayout::Host
        },
        distdir: args.distdir.clone(),
        pkgdir: args.pkgdir.clone(),
        ..Default::default()
    };
    let rendered = profile::render(&profile, &settings, &args.dir)?;
    for f in &rendered.files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_repo_overrides(repos: &[String]) -> Result<BTreeMap<String, PathBuf>, WorkerError> {
    repos
        .iter()
        .map(|r| match r.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                let path = std::path::absolute(path).map_err(|source| WorkerError::Io {
                    path: path.into(),
                    source,
                })?;
                Ok((name.to_string(), path))
            }
            _ => Err(WorkerError::Usage(format!(
                "--repo {r:?}: expected NAME=PATH"
            ))),
        })
        .collect()
}

fn absolute(p: &Path) -> Result<PathBuf, WorkerError> {
    std::path::absolute(p).map_err(|source| WorkerError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// `binfarm build --profile P ATOM...`: exit 0 when emerge succeeded.
pub fn build(args: &BuildArgs) -> Result<ExitCode, WorkerError> {
    let profile = Profile::find(&args.profile.profile, &args.profile.profiles_dir)?;
    let root_dir = match &args.root_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(".binfarm/roots").join(&profile.name),
    };
    let options = BuildRootOptions {
        mode: if args.chroot {
            RunMode::Chroot
        } else {
            RunMode::Host
        },
        venv: absolute(&args.venv)?,
        repo_locations: parse_repo_overrides(&args.profile.repos)?,
        distdir: args.distdir.as_deref().map(absolute).transpose()?,
        pkgdir: args.pkgdir.as_deref().map(absolute).transpose()?,
        binpkg_format: args.format.as_deref().map(|f| {
            if f == "xpak" {
                BinpkgFormat::Xpak
            } else {
                BinpkgFormat::Gpkg
            }
        }),
        signing: None,
    };
    let root = BuildRoot::prepare(&profile, &root_dir, &options)?;
    let mut request = BuildRequest::new(args.atoms.iter().cloned());
    request.usepkg = !args.no_usepkg;
    request.limits.total_timeout = Some(Duration::from_secs(args.timeout));
    request.limits.max_silent = Some(Duration::from_secs(args.max_silent));
    request.limits.log_cap_bytes = args.log_cap_mib << 20;
    let result = run_build(&root, &request)?;
    if args.json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|e| WorkerError::Internal(e.to_string()))?;
        println!("{text}");
    } else {
        for b in &result.built {
            println!("built {} {} sha512:{}", b.cpv, b.path.display(), b.sha512);
        }
        match (&result.status, &result.failure) {
            (BuildStatus::Success, _) => {}
            (_, Some(f)) => eprintln!("failed: {} in the {} phase", f.cpv, f.phase),
            (status, None) => eprintln!("failed: {status:?}"),
        }
        eprintln!(
            "{:?} in {:.1}s, log {}",
            result.status,
            result.duration.as_secs_f64(),
            result.log_path.display()
        );
    }
    Ok(if result.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `binfarm plan --profile P TARGET...`: prints the plan as JSON.
pub fn plan(args: &PlanArgs) -> Result<ExitCode, WorkerError> {
    let profile = Profile::find(&args.profile.profile, &args.profile.profiles_dir)?;
    let root_dir = match &args.root_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(".binfarm/roots").join(&profile.name),
    };
    let options = BuildRootOptions {
        venv: absolute(&args.venv)?,
        repo_locations: parse_repo_overrides(&args.profile.repos)?,
        distdir: args.distdir.as_deref().map(absolute).transpose()?,
        ..Default::default()
    };
    let root = BuildRoot::prepare(&profile, &root_dir, &options)?;
    let plan = super::plan(
        &root,
        &args.targets,
        &super::PlanOptions {
            usepkg: args.usepkg,
            emptytree: args.emptytree,
        },
    )?;
    let text =
        serde_json::to_string_pretty(&plan).map_err(|e| WorkerError::Internal(e.to_string()))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, clap::Args)]
pub struct PortageArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// The root directory (default: .binfarm/roots/<profile>). Its config is rendered from
    /// the profile when missing and used as it is otherwise (see --render).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// The venv with Portage.
    #[arg(long, env = "BINFARM_VENV", default_value = ".venv")]
    pub venv: PathBuf,
    #[arg(long)]
    pub pkgdir: Option<PathBuf>,
    #[arg(long)]
    pub distdir: Option<PathBuf>,
    /// Render the config from the profile even if the root already has one (drops local
    /// changes such as client-config's make.conf block).
    #[arg(long)]
    pub render: bool,
    /// The Portage program (emerge, ebuild, egencache, emaint, portageq, gpkg-sign, ...)
    /// and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `binfarm portage --profile P -- PROGRAM ARGS...`: runs one of Portage's programs in a
/// profile's root on this host (ROOT/PORTAGE_CONFIGROOT layout) with the same environment
/// builds use; exits with its status. Operators use it to reproduce a build; the quickstart
/// uses it for Manifests and for a production node living in a directory.
pub fn portage(args: &PortageArgs) -> Result<ExitCode, WorkerError> {
    let profile = Profile::find(&args.profile.profile, &args.profile.profiles_dir)?;
    let root_dir = match &args.root_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(".binfarm/roots").join(&profile.name),
    };
    let Some((program, program_args)) = args.command.split_first() else {
        return Err(WorkerError::Usage("no Portage program given".into()));
    };
    let venv = absolute(&args.venv)?;
    if program.contains('/') || !venv.join("bin").join(program).is_file() {
        return Err(WorkerError::Usage(format!(
            "{program:?} is not a program of the Portage venv {}",
            venv.join("bin").display()
        )));
    }
    let options = BuildRootOptions {
        venv,
        repo_locations: parse_repo_overrides(&args.profile.repos)?,
        distdir: args.distdir.as_deref().map(absolute).transpose()?,
        pkgdir: args.pkgdir.as_deref().map(absolute).transpose()?,
        ..Default::default()
    };
    let root = if args.render {
        BuildRoot::prepare(&profile, &root_dir, &options)?
    } else {
        BuildRoot::open_or_prepare(&profile, &root_dir, &options)?
    };
    let status = root
        .portage_command(program, program_args, &[])
        .status()
        .map_err(|source| WorkerError::Io {
            path: root.venv.join("bin").join(program),
            source,
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
