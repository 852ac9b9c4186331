#!/usr/bin/env bash
# Build the one-folder Linux executable dist/nvir-agent/ with PyInstaller and CPU torch,
# then run its smoke test (--version and a short headless demo).
#
# Usage: installer/linux/build.sh [--no-smoke]
# Environment:
#   BUILD_VENV       build venv (default build/pyi-venv; created when missing)
#   TORCH_INDEX_URL  where torch comes from (default https://download.pytorch.org/whl/cpu,
#                    the CPU builds); set it empty to take torch from the default index
#                    instead (on Linux a CUDA build: several GB larger)
#   PYTHON           interpreter for the venv (default python3; 3.10-3.12)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${BUILD_VENV:-build/pyi-venv}
index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}

start=$(date +%s)
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
if [ -n "$index" ]; then
    "$py" -m pip install -q torch torchvision --index-url "$index"
else
    "$py" -m pip install -q torch torchvision
fi
"$py" -m pip install -q . pyinstaller
"$py" -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
    installer/pyinstaller/nvir-agent.spec
echo "built dist/nvir-agent in $(( $(date +%s) - start )) s, $(du -sh dist/nvir-agent | cut -f1)"

if [ "${1:-}" != "--no-smoke" ]; then
    installer/pyinstaller/smoke.sh dist/nvir-agent
fi
