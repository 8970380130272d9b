#!/usr/bin/env bash
# binfarm quickstart: a whole farm on this machine, from nothing to a node that installed
# signed binpkgs from the mirror.
#
#   bash scripts/quickstart.sh          # leaves the farm running (Ctrl-C stops it)
#   bash scripts/quickstart.sh --once   # stops everything after the node check
#
# 1. installs what is missing (scripts/setup.sh) and builds binfarm (release);
# 2. prepares the fixture ebuild repository (tests/fixtures/repo) with Manifests;
# 3. starts `binfarm serve` on its embedded defaults (state in ./binfarm-state,
#    http://127.0.0.1:8620) and two local workers;
# 4. runs a nightly for the example profiles x86-64-v2 and x86-64-v3 (real emerge builds,
#    signed by the farm key, published to `testing`), then promotes `testing` to `stable`;
# 5. sets up a fresh node root for x86-64-v3 only from `binfarm client-config` output and
#    installs the packages with real `emerge --getbinpkgonly`, signature checks on;
# 6. prints the web UI and mirror URLs.
#
# Environment: BINFARM_BIN=path uses an already built binfarm instead of building one
# (the test suite passes its debug build). Re-running is fine: cached builds are skipped.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

ONCE=0
for arg in "$@"; do
    case "$arg" in
    --once) ONCE=1 ;;
    -h | --help)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "quickstart: unknown argument $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

say() { printf '\n==> %s\n' "$*"; }
die() {
    echo "quickstart: $*" >&2
    exit 1
}

# Embedded defaults (templates/farm.toml): listen address, state dir, profiles dir.
URL=http://127.0.0.1:8620
STATE=$ROOT_DIR/binfarm-state
QS=$STATE/quickstart
PROFILES=(x86-64-v2 x86-64-v3)
NODE_PROFILE=x86-64-v3
NODE_ATOMS=(app-misc/hello app-misc/greeter app-misc/banner)
BUILD_TIMEOUT=${QUICKSTART_BUILD_TIMEOUT:-1800}

PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
on_error() {
    echo "quickstart failed; logs in $QS/*.log" >&2
    for log in "$QS"/serve.log "$QS"/worker-*.log; do
        [ -f "$log" ] && { echo "--- $log (tail)" >&2; tail -n 15 "$log" >&2; }
    done
}
trap on_error ERR
trap stop_all EXIT
trap 'exit 130' INT TERM

say "setting up (scripts/setup.sh)"
bash scripts/setup.sh
if [ -n "${BINFARM_BIN:-}" ]; then
    BIN=$(realpath "$BINFARM_BIN")
else
    say "building binfarm (cargo build --release)"
    cargo build --release --locked --quiet
    BIN=$ROOT_DIR/target/release/binfarm
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
export BINFARM_VENV=$ROOT_DIR/.venv

if curl -s -o /dev/null --max-time 2 "$URL/health"; then
    die "something already listens on $URL (a running binfarm serve?): stop it first"
fi

say "preparing the fixture repository with Manifests in $QS/repo"
mkdir -p "$QS"
rm -rf "$QS/repo" "$QS/manifest-root"
cp -r tests/fixtures/repo "$QS/repo"
mkdir -p "$QS/distfiles"
for src in tests/fixtures/src/*/; do
    name=$(basename "$src")
    # Same bytes on every run, so the Manifests (and the farm's fingerprints) stay the same.
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C tests/fixtures/src -cf "$QS/distfiles/$name.tar" "$name"
    gzip -n -9 -f "$QS/distfiles/$name.tar"
done
portage_tool() {
    "$BIN" portage --profile "${PROFILES[1]}" --root-dir "$QS/manifest-root" \
        --repo "farm-test=$QS/repo" --distdir "$QS/distfiles" -- "$@"
}
for pkgdir in "$QS"/repo/*-*/*/; do
    ebuild=$(find "$pkgdir" -maxdepth 1 -name '*.ebuild' | sort | head -n 1)
    [ -n "$ebuild" ] && portage_tool ebuild "$ebuild" manifest >/dev/null
done
portage_tool egencache --update --repo farm-test --jobs 2

say "starting binfarm serve (embedded defaults, state in $STATE)"
"$BIN" serve >>"$QS/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$URL/health" && break
    kill -0 "${PIDS[0]}" 2>/dev/null || die "binfarm serve exited; see $QS/serve.log"
    sleep 0.2
done
curl -sf -o /dev/null "$URL/health" || die "binfarm serve did not answer on $URL/health"

for w in 1 2; do
    token=$QS/worker-$w.token
    if [ ! -s "$token" ]; then
        "$BIN" token create --worker "quickstart-$w" --output "$token" 2>/dev/null ||
            "$BIN" token create --worker "quickstart-$w" --rotate --output "$token"
    fi
    profile_args=()
    for p in "${PROFILES[@]}"; do profile_args+=(--profile "$p"); done
    "$BIN" worker --coordinator "$URL" --token-file "$token" \
        --profiles-dir profiles "${profile_args[@]}" --work-dir "$QS/worker-$w" \
        --repo "farm-test=$QS/repo" --distdir "$QS/distfiles" >>"$QS/worker-$w.log" 2>&1 &
    PIDS+=($!)
done
echo "workers quickstart-1 and quickstart-2 started (logs $QS/worker-*.log)"

say "nightly for ${PROFILES[*]} (real emerge builds on the two workers)"
nightly_args=()
for p in "${PROFILES[@]}"; do nightly_args+=(--profile "$p"); done
# --wait follows the requests until they are built and published to testing (a rerun
# where nothing changed keeps testing's snapshot) and fails naming any failing package.
timeout "$BUILD_TIMEOUT" "$BIN" nightly "${nightly_args[@]}" --wait ||
    die "the nightly did not succeed within ${BUILD_TIMEOUT}s (see $URL/ and $QS/serve.log)"

say "promoting testing -> stable"
for p in "${PROFILES[@]}"; do
    "$BIN" promote --profile "$p" --to stable
done
"$BIN" snapshots list

say "a fresh node root for $NODE_PROFILE, configured only by binfarm client-config"
NODE=$QS/node
rm -rf "$NODE"
node_portage() {
    "$BIN" portage --profile "$NODE_PROFILE" --root-dir "$NODE" \
        --repo "farm-test=$QS/repo" "$@"
}
# Renders the node's base Portage config (its Gentoo profile and CHOST), as a stage3 has.
node_portage -- portageq envvar CHOST >/dev/null
"$BIN" client-config --profile "$NODE_PROFILE" --channel stable --mirror "$URL/mirror" \
    --config-root "$NODE" >"$QS/client-config.sh"
sh "$QS/client-config.sh"
node_portage -- emerge --getbinpkgonly --verbose "${NODE_ATOMS[@]}" 2>&1 | tee "$QS/node-emerge.log"
for atom in "${NODE_ATOMS[@]}"; do
    installed=$(find "$NODE/root/var/db/pkg/${atom%/*}" -maxdepth 1 -name "${atom#*/}-[0-9]*" 2>/dev/null | head -n 1)
    [ -n "$installed" ] || die "$atom is not installed on the node"
    build_id=$(cat "$installed/BUILD_ID" 2>/dev/null || echo "?")
    echo "node: installed $(basename "$installed") (BUILD_ID $build_id) from the stable mirror"
done
grep -q "binpkg-request-signature" "$NODE/etc/portage/make.conf" ||
    die "the node's make.conf does not require signed binpkgs"

say "binfarm is running"
cat <<EOF
  web UI           $URL/
  API              $URL/api/v1/requests
  mirror (stable)  $URL/mirror/$NODE_PROFILE/stable/Packages
  mirror (testing) $URL/mirror/$NODE_PROFILE/testing/Packages
  metrics          $URL/metrics
  node root        $NODE (emerge: $BIN portage --profile $NODE_PROFILE --root-dir $NODE -- emerge ...)
  logs             $QS/serve.log, $QS/worker-1.log, $QS/worker-2.log
EOF

if [ "$ONCE" = 1 ]; then
    say "--once: stopping the coordinator and the workers"
    stop_all
    exit 0
fi
echo
echo "Press Ctrl-C to stop the coordinator and the workers."
wait "${PIDS[0]}"
