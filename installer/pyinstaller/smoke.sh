#!/usr/bin/env bash
# Smoke test of a one-folder build: --version, then a short headless demo, in a
# throw-away HOME. Usage: installer/pyinstaller/smoke.sh [DIST_DIR] (default dist/nvir-agent)
set -euo pipefail
dist=${1:-dist/nvir-agent}
exe="$dist/nvir-agent"
[ -x "$exe" ] || { echo "no executable at $exe: build first (installer/linux/build.sh)" >&2; exit 1; }
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export HOME="$home" XDG_CONFIG_HOME="$home/config" XDG_DATA_HOME="$home/data" \
       XDG_STATE_HOME="$home/state" XDG_CACHE_HOME="$home/cache" QT_QPA_PLATFORM=offscreen
unset NVIR_AGENT_CONFIG DISPLAY WAYLAND_DISPLAY

"$exe" --version
"$exe" paths
"$exe" demo --headless --fast --days 3 --size 256 --compounds Fictazine --keep "$home/demo"
test -s "$home/demo/nvir-demo-report.html"
test -s "$home/demo/nvir-demo.sqlite3"
echo "smoke test passed: $exe"
