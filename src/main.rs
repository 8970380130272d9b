use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// binfarm: a build farm for Gentoo binary packages.
#[derive(Parser)]
#[command(name = "binfarm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// hw-profiles: validate and render.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Build atoms for a profile with real emerge (--buildpkg --usepkg) in its build root.
    Build(binfarm::worker::cli::BuildArgs),
    /// Print the merge list with dependency edges and per-package USE, as JSON.
    Plan(binfarm::worker::cli::PlanArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile {
            command: ProfileCommand::Check { dir },
        } => binfarm::worker::cli::profile_check(&dir),
        Command::Profile {
            command: ProfileCommand::Render(args),
        } => binfarm::worker::cli::profile_render(&args),
        Command::Build(args) => binfarm::worker::cli::build(&args),
        Command::Plan(args) => binfarm::worker::cli::plan(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("binfarm: {e}");
            ExitCode::FAILURE
        }
    }
}
