#!/usr/bin/env bash
# Runs the farm on its embedded defaults from a fresh Debian machine: installs what is
# missing (scripts/setup.sh), builds binfarm, and starts the coordinator with SQLite, a local
# blob store and the built-in HTTP mirror under ./binfarm-state (or $BINFARM_STATE).
# Extra arguments go to `binfarm serve` (e.g. --config farm.toml).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked --quiet
export BINFARM_VENV=${BINFARM_VENV:-$PWD/.venv}
exec ./target/release/binfarm serve "$@"
