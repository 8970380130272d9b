//! Command implementations behind `main.rs`: compose library calls and format output.
//! Each returns the process exit code; errors carry their context up to `main`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::binpkg::{self, SignatureStatus};
use crate::index;

pub mod farm;
pub mod progress;
use crate::sign::{Keyring, SigningKey};

/// Logs go to stderr; `RUST_LOG` selects the level (default: info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn pkg_inspect(file: &Path, json: bool) -> Result<ExitCode> {
    let pkg = binpkg::read(file)?;
    let contents = binpkg::contents(file)?;
    if json {
        let mut value = serde_json::to_value(&pkg)?;
        value["contents"] = serde_json::to_value(&contents)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("file: {}", file.display());
    println!("format: {:?}", pkg.format);
    if let Some(top) = &pkg.top_dir {
        println!("top directory: {top}");
    }
    println!("signature: {}", signature_text(&pkg.signature));
    println!("members:");
    for m in &pkg.members {
        println!("  {:>10}  {}", m.size, m.name);
    }
    println!("metadata:");
    for (key, value) in &pkg.metadata.text {
        let first_line = value.lines().next().unwrap_or("");
        let more = if value.lines().nth(1).is_some() {
            " ..."
        } else {
            ""
        };
        println!("  {key}: {first_line}{more}");
    }
    for key in &pkg.metadata.binary_keys {
        println!("  {key}: (binary)");
    }
    println!("contents:");
    for entry in &contents {
        let link = entry
            .link_target
            .as_deref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "  {:?} {:04o} {:>10}  {}{link}",
            entry.kind, entry.mode, entry.size, entry.path
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn signature_text(status: &SignatureStatus) -> String {
    match status {
        SignatureStatus::Unsigned => "unsigned".into(),
        SignatureStatus::Present => {
            "signed (not checked; use `binfarm pkg verify --keyring`)".into()
        }
        SignatureStatus::Good { signers } => {
            let keys: Vec<&str> = signers
                .iter()
                .map(|s| s.signing_fingerprint.as_str())
                .collect();
            format!("good, from {}", keys.join(", "))
        }
    }
}

pub fn pkg_verify(file: &Path, keyring_path: &Path) -> Result<ExitCode> {
    let keyring = Keyring::load(keyring_path)?;
    let pkg = binpkg::verify(file, &keyring)?;
    println!("{}: OK, {}", file.display(), signature_text(&pkg.signature));
    Ok(ExitCode::SUCCESS)
}

pub fn pkg_sign(file: &Path, key_path: &Path, passphrase_file: Option<&Path>) -> Result<ExitCode> {
    let key = SigningKey::from_armored_file(key_path, passphrase_file)?;
    binpkg::sign_in_place(file, &key)?;
    println!("{}: signed with {}", file.display(), key.fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// `binfarm index` options besides the PKGDIR and keyring.
pub struct IndexFlags {
    pub uri: Option<String>,
    pub ttl: Option<u64>,
    /// `KEY=VALUE` header settings (`KEY=` removes the key).
    pub headers: Vec<String>,
    pub no_compress: bool,
    pub reindex: bool,
    pub json: bool,
}

pub fn index(pkgdir: &Path, keyring_path: Option<&Path>, flags: &IndexFlags) -> Result<ExitCode> {
    let keyring = keyring_path.map(Keyring::load).transpose()?;
    let mut header_overrides = std::collections::BTreeMap::new();
    for setting in &flags.headers {
        let Some((key, value)) = setting.split_once('=') else {
            anyhow::bail!("--header {setting:?}: expected KEY=VALUE");
        };
        header_overrides.insert(key.to_owned(), value.to_owned());
    }
    let options = index::IndexOptions {
        keyring: keyring.as_ref(),
        uri: flags.uri.clone(),
        ttl: flags.ttl,
        header_overrides,
        no_compress: flags.no_compress,
        reindex_all: flags.reindex,
        progress: progress::terminal(),
        ..index::IndexOptions::default()
    };
    let report = index::update_pkgdir(pkgdir, &options)?;
    if flags.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(problem) = &report.previous_index_problem {
            eprintln!("warning: existing index not used: {problem}");
        }
        for rejected in &report.rejected {
            eprintln!("left out: {}: {}", rejected.path, rejected.reason);
        }
        println!(
            "{}: {} packages ({} reused, {} read, {} dropped, {} left out); {}",
            pkgdir.join(index::PACKAGES_FILE).display(),
            report.entries,
            report.reused,
            report.added.len(),
            report.removed.len(),
            report.rejected.len(),
            if report.written {
                "written"
            } else {
                "unchanged"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn mirror(
    root: &Path,
    listen: std::net::SocketAddr,
    access_log: Option<&Path>,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(crate::mirror::run(root, listen, access_log))?;
    Ok(ExitCode::SUCCESS)
}

pub fn bench_index(packages: usize) -> Result<ExitCode> {
    let config = crate::bench::index::IndexBenchConfig::new(packages);
    let report = crate::bench::index::bench_index(&config)?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `binfarm bench mirror`: prints the table; fails when a measurement is not meaningful.
pub fn bench_mirror(config: &crate::bench::mirror::MirrorBenchConfig) -> Result<ExitCode> {
    let report = crate::bench::mirror::bench_mirror(config)?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

pub fn ftp_publish(
    config: crate::publish::ftp::FtpTargetConfig,
    tree: &Path,
    remote_dir: &str,
) -> Result<ExitCode> {
    let target = crate::publish::ftp::FtpTarget::try_from(config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(target.publish_tree_with_progress(
        tree,
        remote_dir,
        &progress::terminal(),
    ))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn bench_schedule(steps: usize, workers: usize, seed: Option<u64>) -> Result<ExitCode> {
    let mut config = crate::plan::bench::ScheduleBenchConfig {
        steps,
        workers,
        ..Default::default()
    };
    if let Some(seed) = seed {
        config.seed = seed;
    }
    let report = crate::plan::bench::bench_schedule(&config)?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

pub fn bench_rollout() -> Result<ExitCode> {
    let report = crate::rollout::bench::bench_rollout()?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
