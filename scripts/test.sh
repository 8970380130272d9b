#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need
# (scripts/setup.sh), then runs lint and every unit and integration test with the
# real tools (Portage's emerge, gpg, distccd, ...).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export BINFARM_VENV=${BINFARM_VENV:-$PWD/.venv}

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Integration tests run real emerge; two at a time suits a 2-core machine.
cargo test --locked --no-fail-fast -- --test-threads=2
# The README's first command, end to end with the binary just tested: a farm on the
# embedded defaults builds, publishes, promotes, and a node installs from its mirror.
BINFARM_BIN=target/debug/binfarm bash scripts/quickstart.sh --once
