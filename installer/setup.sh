#!/usr/bin/env bash
# Set up NViR Agent in ./.venv (created when missing). As root, also installs the
# Debian libraries Qt needs (with --test also the PostgreSQL server the store tests start a
# throwaway instance of, and desktop-file-utils and systemd, which the autostart tests
# use). Usage: installer/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    need=()
    for pkg in libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 \
               libglib2.0-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 \
               libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ -n "$extras" ]; then
        dpkg -s postgresql >/dev/null 2>&1 || need+=(postgresql)
    fi
    if [ ${#need[@]} -gt 0 ]; then
        echo "Installing Debian packages: ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if [ -n "$extras" ]; then
        # the autostart tests check the files they write with these tools
        need=()
        command -v desktop-file-validate >/dev/null 2>&1 || need+=(desktop-file-utils)
        command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
        if [ ${#need[@]} -gt 0 ]; then
            echo "Installing Debian tools for the tests: ${need[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        fi
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
