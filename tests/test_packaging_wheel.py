"""The built wheel carries what the agent needs at run time: installed into a
fresh virtual environment and run from another folder, `model info` names the
bundled demo model and a small headless demo goes end to end.

The fresh environment gets its dependencies (torch …) from this environment's
site-packages through a path line in a .pth file, so nothing is downloaded or
reinstalled; a path line does not process the .pth files inside that folder,
so this checkout's editable install stays out of reach and the wheel's copy of
nvir_agent is the one imported (the test checks that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_model_info_and_a_small_demo(tmp_path):
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "NVIR_AGENT_CONFIG")}
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "nvir_agent", src / "nvir_agent", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(dist), str(src)], tmp_path, env, 300)
    [wheel] = dist.glob("nvir_agent-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env, 120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], tmp_path, env, 60).strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_nvir_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], tmp_path, env, 300)
    built_s = time.perf_counter() - t0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), XDG_STATE_HOME=str(home / "state"),
               XDG_CACHE_HOME=str(home / "cache"), QT_QPA_PLATFORM="offscreen")
    where = _run([str(python), "-c", "import nvir_agent; print(nvir_agent.__file__)"],
                 elsewhere, env, 60).strip()
    assert Path(where).is_relative_to(venv), where

    cli = venv / ("Scripts/nvir-agent.exe" if os.name == "nt" else "bin/nvir-agent")
    info = _run([str(cli), "model", "info"], elsewhere, env, 120)
    demo_model = Path(where).parent / "assets" / "models" / "nvir-demo.safetensors"
    assert f"DEMO model {demo_model}" in info and "(nvir-demo" in info, info

    out = _run([str(cli), "demo", "--headless", "--fast", "--days", "2", "--size", "128",
                "--compounds", "Fictazine", "--keep", "demo"], elsewhere, env, 300)
    assert "Read 2/2" in out, out
    [report] = [line.split(": ", 1)[1] for line in out.splitlines()
                if line.startswith("Report: ")]
    assert Path(report).is_file() and Path(report).is_relative_to(elsewhere / "demo")
    print(f"wheel built and installed in {built_s:.1f} s; "
          f"whole test {time.perf_counter() - t0:.1f} s")
