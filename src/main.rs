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
    /// Run a Portage program (emerge, ebuild, egencache, ...) in a profile's root on this host.
    Portage(binfarm::worker::cli::PortageArgs),
    /// Make a directory on an FTP server mirror a local mirror tree (blobs first, index
    /// last, by temporary name + rename; resumable). Prints the report as JSON.
    FtpPublish {
        /// ftp://[user[:password]@]host[:port]/base/dir (path relative to the login directory).
        #[arg(long)]
        url: String,
        /// Environment variable holding the password (instead of putting it in the URL).
        #[arg(long)]
        password_env: Option<String>,
        /// The local mirror tree (`Packages`, `Packages.gz`, `<cat>/<pn>/*.gpkg.tar`).
        #[arg(long)]
        tree: PathBuf,
        /// Directory below the URL's path, e.g. `<profile>/<channel>`.
        #[arg(long)]
        remote_dir: String,
        /// Parallel FTP connections.
        #[arg(long)]
        sessions: Option<usize>,
        /// Retries per operation (exponential backoff).
        #[arg(long)]
        retries: Option<u32>,
    },
    /// Run the coordinator: API, worker protocol, scheduling, signing, mirror.
    Serve {
        /// farm.toml (default: the embedded defaults, relative to the current directory).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a worker: lease steps from the coordinator and build them with real emerge.
    Worker(WorkerArgs),
    /// Worker tokens (created in the coordinator's state directory).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Start nightly requests (all configured profiles, or the given ones).
    Nightly {
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Follow the requests until they end and are published; exit status 1 when one
        /// did not succeed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rebuild one atom for a profile now (a new BUILD_ID, even if nothing changed).
    Rebuild {
        atom: String,
        #[arg(long)]
        profile: String,
        /// Follow the request until it ends and is published; exit status 1 when it did
        /// not succeed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause or resume a worker (a paused worker gets no new leases).
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Cancel a request.
    Cancel {
        request: i64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Requests and workers; with --request, one request's steps.
    Status {
        #[arg(long)]
        request: Option<i64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a step's build log (--follow: until the step ends).
    Logs {
        step: i64,
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Benchmarks against the real baselines.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Plan upgrades of production farms: one member per farm at a time.
    #[command(subcommand)]
    Rollout(RolloutCommand),
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
enum RolloutCommand {
    /// Diff two snapshots (or channels) per profile and print the upgrade waves.
    Plan {
        /// The inventory (TOML): sites, farms, members, package groups.
        #[arg(long)]
        inventory: PathBuf,
        /// A profile to plan (repeatable); default: every profile the inventory uses.
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// The snapshot or channel the hosts run now: NAME for every profile, or PROFILE=NAME
        /// (repeatable).
        #[arg(long, required = true)]
        from: Vec<String>,
        /// The snapshot or channel to upgrade to: NAME or PROFILE=NAME (repeatable).
        #[arg(long, required = true)]
        to: Vec<String>,
        /// The published mirror tree: <DIR>/<profile>/<channel>/Packages and
        /// <DIR>/<profile>/snapshots/<ID>/Packages.
        #[arg(long, env = "BINFARM_MIRROR_ROOT")]
        mirror_root: PathBuf,
        /// The hw-profiles directory (known profile names).
        #[arg(long, default_value = "profiles")]
        profiles_dir: PathBuf,
        /// Hosts upgraded at once; overrides the inventory's rollout.max_parallel.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write an Ansible inventory.yml and playbook.yml into this directory.
        #[arg(long)]
        ansible: Option<PathBuf>,
    },
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

/// How admin commands reach the coordinator.
#[derive(clap::Args)]
struct AdminArgs {
    /// farm.toml: gives the coordinator URL and the admin token file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Coordinator URL (default: the config's public_url).
    #[arg(long)]
    coordinator: Option<String>,
    /// File holding the admin token (default: the config's admin_token_file).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum WorkersCommand {
    /// Stop giving the worker new steps (its running step finishes).
    Pause {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Give the worker steps again (also after an automatic pause for repeated failures).
    Resume {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a worker and print its token (shown once; only a hash is stored).
    Create {
        #[arg(long)]
        worker: String,
        /// Replace the token of an existing worker instead.
        #[arg(long)]
        rotate: bool,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Coordinator URL, e.g. http://farm.example.com:8620
    #[arg(long)]
    coordinator: String,
    /// File holding this worker's token (`binfarm token create --worker NAME`).
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long, default_value = "profiles")]
    profiles_dir: PathBuf,
    /// Profiles to build (default: every profile in --profiles-dir).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Build roots, logs and PKGDIRs live here.
    #[arg(long, default_value = ".binfarm/worker")]
    work_dir: PathBuf,
    /// The venv with Portage.
    #[arg(long, env = "BINFARM_VENV", default_value = ".venv")]
    venv: PathBuf,
    /// Replace a repository's location: NAME=PATH.
    #[arg(long = "repo", value_name = "NAME=PATH")]
    repos: Vec<String>,
    #[arg(long)]
    distdir: Option<PathBuf>,
    /// Run emerge inside each build root as a chroot (a Gentoo stage3).
    #[arg(long)]
    chroot: bool,
    /// Labels the worker offers (profiles may require some).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Total timeout of one build, seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    timeout: u64,
    /// Kill a build after this many seconds without output.
    #[arg(long, default_value_t = 3600)]
    max_silent: u64,
    /// Exit after this many jobs (default: run until stopped).
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Extra environment for emerge: KEY=VALUE (repeatable).
    #[arg(long = "build-env", value_name = "KEY=VALUE")]
    build_env: Vec<String>,
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
    /// Simulated farm: 2,000-step DAG on 8 workers (makespan ratio), and planning a
    /// no-op nightly of 1,000 unchanged packages.
    Schedule {
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        #[arg(long, default_value_t = 8)]
        workers: usize,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Rollout planning for 500 hosts and 1,000 changed packages.
    Rollout,
    /// The HTTP mirror (`binfarm mirror`) against nginx on the same tree, driven by wrk:
    /// throughput, 304 answers, memory under many clients.
    Mirror(BenchMirrorArgs),
}

#[derive(clap::Args)]
struct BenchMirrorArgs {
    /// Length of each wrk run (whole seconds: 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = binfarm::bench::mirror::parse_duration)]
    duration: std::time::Duration,
    /// Measured runs per scenario and server (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections of the throughput and 304 scenarios.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Connections of the memory scenario.
    #[arg(long, default_value_t = 500)]
    memory_clients: usize,
    /// Binpkg-sized files in the generated tree.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// nginx worker processes and binfarm tokio worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
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
        Command::Portage(args) => binfarm::worker::cli::portage(&args).map_err(Into::into),
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
        Command::Publish(args) => print_text(publish_cli::publish(
            &args,
            binfarm::cli::progress::terminal(),
        )),
        Command::Resign(args) => print_text(publish_cli::resign(&args)),
        Command::Gc(args) => print_text(publish_cli::gc(&args)),
        Command::ClientConfig(args) => print_text(publish_cli::client_config(&args)),
        Command::FtpPublish {
            url,
            password_env,
            tree,
            remote_dir,
            sessions,
            retries,
        } => binfarm::cli::ftp_publish(
            binfarm::publish::ftp::FtpTargetConfig {
                url: Some(url),
                password_env,
                sessions,
                retries,
                ..Default::default()
            },
            &tree,
            &remote_dir,
        ),
        Command::Serve { config } => binfarm::cli::farm::serve(config.as_deref()),
        Command::Worker(args) => worker_config(args).and_then(binfarm::cli::farm::worker),
        Command::Token(TokenCommand::Create {
            worker,
            rotate,
            output,
            config,
        }) => {
            binfarm::cli::farm::token_create(config.as_deref(), &worker, rotate, output.as_deref())
        }
        Command::Nightly {
            profiles,
            wait,
            admin,
        } => admin_client(&admin).and_then(|client| {
            let all = binfarm::cli::farm::configured_profiles(admin.config.as_deref())?;
            binfarm::cli::farm::nightly(&client, &profiles, &all, wait)
        }),
        Command::Rebuild {
            atom,
            profile,
            wait,
            admin,
        } => admin_client(&admin)
            .and_then(|c| binfarm::cli::farm::rebuild(&c, &atom, &profile, wait)),
        Command::Workers(command) => {
            let (name, admin, paused) = match command {
                WorkersCommand::Pause { name, admin } => (name, admin, true),
                WorkersCommand::Resume { name, admin } => (name, admin, false),
            };
            admin_client(&admin)
                .and_then(|c| binfarm::cli::farm::set_worker_paused(&c, &name, paused))
        }
        Command::Cancel { request, admin } => {
            admin_client(&admin).and_then(|c| binfarm::cli::farm::cancel(&c, request))
        }
        Command::Status {
            request,
            json,
            admin,
        } => admin_client(&admin).and_then(|c| binfarm::cli::farm::status(&c, request, json)),
        Command::Logs {
            step,
            follow,
            admin,
        } => admin_client(&admin).and_then(|c| binfarm::cli::farm::logs(&c, step, follow)),
        Command::Bench(BenchCommand::Index { packages }) => binfarm::cli::bench_index(packages),
        Command::Bench(BenchCommand::Schedule {
            steps,
            workers,
            seed,
        }) => binfarm::cli::bench_schedule(steps, workers, seed),
        Command::Bench(BenchCommand::Rollout) => binfarm::cli::bench_rollout(),
        Command::Bench(BenchCommand::Mirror(args)) => {
            binfarm::bench::mirror::MirrorBenchConfig::new()
                .map_err(anyhow::Error::from)
                .and_then(|defaults| {
                    let workers = args.workers.unwrap_or(defaults.workers);
                    binfarm::cli::bench_mirror(&binfarm::bench::mirror::MirrorBenchConfig {
                        duration: args.duration,
                        rounds: args.rounds,
                        connections: args.connections,
                        memory_clients: args.memory_clients,
                        files: args.files,
                        workers,
                        wrk_threads: workers,
                        ..defaults
                    })
                })
        }
        Command::Rollout(RolloutCommand::Plan {
            inventory,
            profiles,
            from,
            to,
            mirror_root,
            profiles_dir,
            max_parallel,
            json,
            ansible,
        }) => binfarm::rollout::plan_command(&binfarm::rollout::PlanRequest {
            inventory,
            profiles,
            from,
            to,
            profiles_dir,
            mirror_root,
            max_parallel,
            json,
            ansible_dir: ansible,
        })
        .map(|text| {
            print!("{text}");
            ExitCode::SUCCESS
        })
        .map_err(anyhow::Error::from),
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

fn admin_client(args: &AdminArgs) -> anyhow::Result<binfarm::cli::farm::AdminClient> {
    binfarm::cli::farm::AdminClient::new(
        args.config.as_deref(),
        args.coordinator.as_deref(),
        args.token_file.as_deref(),
    )
}

fn worker_config(args: WorkerArgs) -> anyhow::Result<binfarm::worker::agent::AgentConfig> {
    let absolute = |p: &std::path::Path| std::path::absolute(p);
    let mut repo_locations = std::collections::BTreeMap::new();
    for spec in &args.repos {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--repo {spec:?}: expected NAME=PATH"))?;
        repo_locations.insert(name.to_owned(), absolute(std::path::Path::new(path))?);
    }
    Ok(binfarm::worker::agent::AgentConfig {
        coordinator: args.coordinator,
        token_file: args.token_file,
        profiles_dir: args.profiles_dir,
        profiles: args.profiles,
        work_dir: absolute(&args.work_dir)?,
        root_options: binfarm::worker::BuildRootOptions {
            mode: if args.chroot {
                binfarm::worker::RunMode::Chroot
            } else {
                binfarm::worker::RunMode::Host
            },
            venv: absolute(&args.venv)?,
            repo_locations,
            distdir: args.distdir.as_deref().map(absolute).transpose()?,
            ..Default::default()
        },
        labels: args.labels,
        limits: binfarm::worker::Limits {
            total_timeout: Some(std::time::Duration::from_secs(args.timeout)),
            max_silent: Some(std::time::Duration::from_secs(args.max_silent)),
            ..Default::default()
        },
        max_jobs: args.max_jobs,
        progress: binfarm::progress::Progress::none(),
        build_env: args
            .build_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("--build-env {kv:?}: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?,
    })
}
