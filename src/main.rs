//! The `binfarm` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use binfarm::publish::cli as publish_cli;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "binfarm",
    version,
    about = "A build farm for Gentoo binary packages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, verify and sign binary packages (gpkg, xpak).
    #[command(subcommand)]
    Pkg(PkgCommand),
    /// Write PKGDIR/Packages and Packages.gz the way Portage does (incremental).
    Index {
        /// The package directory to index.
        pkgdir: PathBuf,
        /// Leave out (and report) packages that are not signed by a key in this keyring
        /// (an ASCII-armored public key file, or a directory of them).
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// URI header: where clients fetch the packages from, when not beside the index.
        #[arg(long)]
        uri: Option<String>,
        /// TTL header, in seconds: how long clients may use the index without re-checking.
        #[arg(long)]
        ttl: Option<u64>,
        /// Header key to set, as KEY=VALUE (profile keys: ARCH, CHOST, USE, PROFILE, ...);
        /// KEY= removes it. Repeatable. Other keys keep their value from the existing index.
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Do not write Packages.gz (and remove an old one).
        #[arg(long)]
        no_compress: bool,
        /// Re-read and re-hash every package, even those the index already describes.
        #[arg(long)]
        reindex: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve mirror trees over HTTP (GET, HEAD, Range, conditional requests).
    Mirror {
        /// The directory holding `<profile>/<channel>/Packages` trees.
        #[arg(long)]
        root: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Append an access log (combined log format) to this file.
        #[arg(long)]
        access_log: Option<PathBuf>,
    },
    /// hw-profiles: validate and render.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Build atoms for a profile with real emerge (--buildpkg --usepkg) in its build root.
    Build(binfarm::worker::cli::BuildArgs),
    /// Print the merge list with dependency edges and per-package USE, as JSON.
    Plan(binfarm::worker::cli::PlanArgs),
    /// Benchmarks against the real baselines.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Point a channel (default stable) at a snapshot (default: what testing points at).
    Promote(publish_cli::PromoteArgs),
    /// Move a channel back to the snapshot it pointed at before its last move.
    Rollback(publish_cli::RollbackArgs),
    /// Snapshots: list, diff, import.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
    /// Publish a channel's local mirror tree again (after a failed or killed publish).
    Publish(publish_cli::SyncArgs),
    /// Re-sign the snapshot a channel points at with the current key (new BUILD_IDs).
    Resign(publish_cli::ResignArgs),
    /// Remove snapshots, blobs and mirror files retention no longer keeps.
    Gc(publish_cli::GcArgs),
    /// Print the shell script that configures a production node for a profile's channel.
    ClientConfig(publish_cli::ClientConfigArgs),
}

#[derive(Subcommand)]
enum SnapshotsCommand {
    /// List snapshots, with the channels pointing at them.
    List(publish_cli::ListArgs),
    /// Added, upgraded, downgraded, removed and rebuilt packages from snapshot A to B.
    Diff(publish_cli::DiffArgs),
    /// Store signed gpkg files, make a snapshot of them and publish it (default: testing).
    Import(publish_cli::ImportArgs),
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Validate every profile (*.toml, recursively) in a directory; one line per problem.
    Check {
        #[arg(long, default_value = "profiles")]
        dir: PathBuf,
    },
    /// Render a profile into a complete Portage config root in DIR.
    Render(binfarm::worker::cli::RenderArgs),
}

#[derive(Subcommand)]
enum PkgCommand {
    /// Show a binpkg's metadata, contents and signature status.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 only if the Manifest matches, the package is signed, and every signature is
    /// good from a key in the keyring.
    Verify {
        file: PathBuf,
        /// An ASCII-armored public key file, or a directory of them.
        #[arg(long)]
        keyring: PathBuf,
    },
    /// Sign an unsigned gpkg in place (atomically).
    Sign {
        file: PathBuf,
        /// An ASCII-armored secret key.
        #[arg(long)]
        key: PathBuf,
        /// A file whose first line is the key's passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time publishing a snapshot to a local tree whose package files already exist.
    Publish {
        #[arg(long, default_value_t = 1000)]
        packages: usize,
    },
    /// Time `binfarm index --keyring` (cold and warm) against `emaint binhost --fix`.
    Index {
        /// Number of signed gpkgs to create.
        #[arg(long, default_value_t = 300)]
        packages: usize,
    },
}

fn main() -> ExitCode {
    binfarm::cli::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pkg(PkgCommand::Inspect { file, json }) => binfarm::cli::pkg_inspect(&file, json),
        Command::Pkg(PkgCommand::Verify { file, keyring }) => {
            binfarm::cli::pkg_verify(&file, &keyring)
        }
        Command::Pkg(PkgCommand::Sign {
            file,
            key,
            passphrase_file,
        }) => binfarm::cli::pkg_sign(&file, &key, passphrase_file.as_deref()),
        Command::Index {
            pkgdir,
            keyring,
            uri,
            ttl,
            headers,
            no_compress,
            reindex,
            json,
        } => binfarm::cli::index(
            &pkgdir,
            keyring.as_deref(),
            &binfarm::cli::IndexFlags {
                uri,
                ttl,
                headers,
                no_compress,
                reindex,
                json,
            },
        ),
        Command::Mirror {
            root,
            listen,
            access_log,
        } => binfarm::cli::mirror(&root, listen, access_log.as_deref()),
        Command::Profile {
            command: ProfileCommand::Check { dir },
        } => binfarm::worker::cli::profile_check(&dir).map_err(Into::into),
        Command::Profile {
            command: ProfileCommand::Render(args),
        } => binfarm::worker::cli::profile_render(&args).map_err(Into::into),
        Command::Build(args) => binfarm::worker::cli::build(&args).map_err(Into::into),
        Command::Plan(args) => binfarm::worker::cli::plan(&args).map_err(Into::into),
        Command::Bench(BenchCommand::Publish { packages }) => {
            print_text(binfarm::publish::bench::bench_publish(packages))
        }
        Command::Promote(args) => print_text(publish_cli::promote(&args)),
        Command::Rollback(args) => print_text(publish_cli::rollback(&args)),
        Command::Snapshots(SnapshotsCommand::List(args)) => {
            print_text(publish_cli::snapshots_list(&args))
        }
        Command::Snapshots(SnapshotsCommand::Diff(args)) => {
            print_text(publish_cli::snapshots_diff(&args))
        }
        Command::Snapshots(SnapshotsCommand::Import(args)) => {
            print_text(publish_cli::snapshots_import(&args))
        }
        Command::Publish(args) => print_text(publish_cli::publish(&args)),
        Command::Resign(args) => print_text(publish_cli::resign(&args)),
        Command::Gc(args) => print_text(publish_cli::gc(&args)),
        Command::ClientConfig(args) => print_text(publish_cli::client_config(&args)),
        Command::Bench(BenchCommand::Index { packages }) => binfarm::cli::bench_index(packages),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("binfarm: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's text output.
fn print_text(result: Result<String, binfarm::publish::PublishError>) -> anyhow::Result<ExitCode> {
    let text = result?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
