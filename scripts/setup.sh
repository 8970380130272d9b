#!/usr/bin/env bash
# Installs everything binfarm's tests and quickstart need on a fresh Debian host.
# Idempotent: a second run only checks and returns in about a second.
#
#   - Debian packages: pax-utils (scanelf, soname metadata in binpkgs), gnupg,
#     distcc (distccd for the distcc build test), zstd, curl, vsftpd (the FTP mirror tests
#     start their own instance on 127.0.0.1; the package's system service is not used),
#     chromium (tests/web_browser.rs loads the web pages in headless chromium),
#     wget (Portage's default FETCHCOMMAND: nodes download binpkgs from ftp:// binhosts with it),
#     nginx and wrk (`binfarm bench mirror` runs its own nginx as the current user on
#     127.0.0.1 and drives it with wrk; the package's system service is never started)
#   - real Portage from PyPI in a project-local venv (.venv), pinned
#   - ansible-core from PyPI in the same venv, pinned (tests check the rollout playbooks
#     with the real ansible-playbook)
#   - prometheus-client from PyPI in the same venv, pinned (tests parse /metrics with its
#     Prometheus text parser)
#   - .venv/compat-bin/gtar -> tar (Portage's unpack calls gtar; Debian lacks it)
set -Eeuo pipefail

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
VENV=${BINFARM_VENV:-$ROOT_DIR/.venv}
PORTAGE_VERSION=3.0.83
# The newest ansible-core line that still runs on Debian 12's Python 3.11.
ANSIBLE_CORE_VERSION=2.19.14
PROMETHEUS_CLIENT_VERSION=0.26.0
DEBIAN_PACKAGES=(pax-utils gnupg distcc zstd curl ca-certificates vsftpd chromium wget nginx wrk)

log() { printf 'setup: %s\n' "$*"; }

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Package scripts (nginx's, vsftpd's) try to start system services: deny that while
	# installing (exit 101 = action forbidden), whether or not systemd runs here.
	POLICY_RC=/usr/sbin/policy-rc.d
	own_policy=
	if [[ ! -e $POLICY_RC ]]; then
		printf '#!/bin/sh\n# binfarm setup.sh: no service starts during installs\nexit 101\n' >"$POLICY_RC"
		chmod 755 "$POLICY_RC"
		own_policy=1
	fi
	status=0
	apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
		|| status=$?
	[[ -n $own_policy ]] && rm -f "$POLICY_RC"
	((status == 0)) || exit "$status"
fi

# A system nginx started anyway (by an older install, or a policy that allowed it) would
# only hold port 80; the benchmark runs its own. Stop it by its pid file.
if [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
	log "stopping the system nginx (pid $(cat /run/nginx.pid)); binfarm runs its own"
	kill -QUIT "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

if ! "$VENV/bin/python" -c "import portage, sys; sys.exit(portage.VERSION != '$PORTAGE_VERSION')" 2>/dev/null; then
	log "creating venv $VENV with portage $PORTAGE_VERSION"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "portage==$PORTAGE_VERSION"
fi

if ! "$VENV/bin/python" -c "import sys, ansible.release as r; sys.exit(r.__version__ != '$ANSIBLE_CORE_VERSION')" 2>/dev/null; then
	log "installing ansible-core $ANSIBLE_CORE_VERSION in $VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION"
fi

if ! "$VENV/bin/python" -c "import sys, importlib.metadata as m; sys.exit(m.version('prometheus-client') != '$PROMETHEUS_CLIENT_VERSION')" 2>/dev/null; then
	log "installing prometheus-client $PROMETHEUS_CLIENT_VERSION in $VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
fi

mkdir -p "$VENV/compat-bin"
ln -sfn "$(command -v tar)" "$VENV/compat-bin/gtar"

log "ok: portage $PORTAGE_VERSION, ansible-core $ANSIBLE_CORE_VERSION and prometheus-client $PROMETHEUS_CLIENT_VERSION in $VENV, $(scanelf --version 2>/dev/null | head -1 || echo 'scanelf missing')"
