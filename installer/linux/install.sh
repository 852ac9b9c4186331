#!/usr/bin/env bash
# Install NViR Agent for the current user: a venv under ~/.local/opt/nvir-agent, the
# command in ~/.local/bin, and start at login (the tray, or --headless: a systemd
# user service). No root needed. Run it again to upgrade; data and config stay.
#
# Usage: installer/linux/install.sh [--headless] [--no-autostart] [--cpu-torch] [--uninstall]
#   --headless      start `nvir-agent run --headless` as a systemd user service at login
#   --no-autostart  install only; do not start at login
#   --cpu-torch     take torch from the PyTorch CPU index (about 1 GB instead of several:
#                   for PCs without an NVIDIA GPU)
#   --uninstall     remove the autostart entry, the venv and the command; keep data and config
# Environment: NVIR_AGENT_PREFIX (default ~/.local/opt/nvir-agent), PYTHON (default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${NVIR_AGENT_PREFIX:-$HOME/.local/opt/nvir-agent}
bin_dir=$HOME/.local/bin
headless="" autostart=1 cpu=0 uninstall=0
for arg in "$@"; do
    case "$arg" in
        --headless) headless="--headless" ;;
        --no-autostart) autostart=0 ;;
        --cpu-torch) cpu=1 ;;
        --uninstall) uninstall=1 ;;
        *) echo "unknown option: $arg (see the head of $0)" >&2; exit 2 ;;
    esac
done

if [ "$uninstall" = 1 ]; then
    if [ -x "$prefix/venv/bin/nvir-agent" ]; then
        "$prefix/venv/bin/nvir-agent" autostart remove
    fi
    [ -L "$bin_dir/nvir-agent" ] && rm "$bin_dir/nvir-agent"
    rm -rf "$prefix"
    echo "Removed $prefix. Data, config and logs are kept: remove them by hand if wanted"
    echo "(~/.config/nvir-agent, ~/.local/share/nvir-agent, ~/.local/state/nvir-agent, ~/.cache/nvir-agent)."
    exit 0
fi

[ -x "$prefix/venv/bin/python" ] || { mkdir -p "$prefix"; "${PYTHON:-python3}" -m venv "$prefix/venv"; }
py="$prefix/venv/bin/python"
"$py" -m pip install -q --upgrade pip
if [ "$cpu" = 1 ]; then
    "$py" -m pip install -q torch torchvision --index-url https://download.pytorch.org/whl/cpu
fi
"$py" -m pip install -q --upgrade .
"$py" -m pip install -q --no-deps --force-reinstall .   # same version number, newer code
mkdir -p "$bin_dir"
ln -sfn "$prefix/venv/bin/nvir-agent" "$bin_dir/nvir-agent"
echo "Installed $("$prefix/venv/bin/nvir-agent" --version) in $prefix/venv; command: $bin_dir/nvir-agent"

if [ "$autostart" = 1 ]; then
    # the console script inside the venv, not the link: it survives a changed PATH
    "$prefix/venv/bin/nvir-agent" autostart install $headless
fi
