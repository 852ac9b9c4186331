"""Start-up times of the command line, each in a fresh process.

    .venv/bin/python benchmarks/startup.py [--repeat 5]

Measures, with the wall clock around the whole process (interpreter start
included): ``nvir-agent --version``, ``nvir-agent status`` (a config with one
watched folder and a fresh store), and the first score — ``nvir-agent score``
on one 1024² PNG with the bundled demo model and with a paper-size network
(256², trained-like weights), the inference path's choice cached from an
earlier run as on an installed agent, and again with an empty cache (the
choice measured). Also which heavy modules ``status`` and ``score`` import
(torch, torchvision, OpenCV, Qt) and the time ``import torch`` takes alone.
Prints the median and the range of ``--repeat`` runs and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import cv2
    from scoring_fixtures import write_trained_like_model

    from nvir_agent.synth.render import Conditions, render_spheroid

    work = Path(tempfile.mkdtemp(prefix="nvir-startup-"))
    (work / "acq").mkdir()
    image = work / "P1_A01_s1_w1.png"
    cv2.imwrite(str(image), render_spheroid(0.8, seed=5, conditions=Conditions(
        width=1024, height=1024)).image)
    paper = write_trained_like_model(work / "paper-256.safetensors")
    config = work / "agent.toml"
    config.write_text(f"[watch]\nfolders = [{json.dumps(str(work / 'acq'))}]\n"
                      f"[storage]\ndatabase = {json.dumps(str(work / 'agent.sqlite3'))}\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), NVIR_AGENT_CONFIG=str(config))
    agent = [sys.executable, "-m", "nvir_agent"]
    probe = ("import runpy, sys; sys.argv = {argv!r}\n"
             "try:\n    runpy.run_module('nvir_agent', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'cv2', 'PySide6') "
             "if m in sys.modules))")
    cases = {
        "--version": agent + ["--version"],
        "status": agent + ["status"],
        "first score, demo model (choice cached)": agent + ["score", str(image)],
        "first score, paper-size network (choice cached)": agent + ["score", "--model",
                                                                    str(paper), str(image)],
        "import torch alone": [sys.executable, "-c", "import torch"],
    }
    for cmd in list(cases.values())[2:4]:  # fill the cache of the choice once
        timed(cmd, env)
    results: dict[str, list[float]] = {name: [] for name in cases}
    results["first score, paper-size network (choice measured)"] = []
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            seconds, proc = timed(cmd, env)
            if proc.returncode not in (0, 1):  # status says 1 where it lists problems
                raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
            results[name].append(seconds)
        fresh = dict(env, XDG_CACHE_HOME=tempfile.mkdtemp(dir=work))
        seconds, _ = timed(cases["first score, paper-size network (choice cached)"], fresh)
        results["first score, paper-size network (choice measured)"].append(seconds)
    for name, values in results.items():
        print(f"{name:52s} median {statistics.median(values):5.2f} s  "
              f"({min(values):.2f}–{max(values):.2f} s, {len(values)} runs)")
    for name, argv in (("status", ["nvir-agent", "status"]),
                       ("score", ["nvir-agent", "score", str(image)])):
        proc = subprocess.run([sys.executable, "-c", probe.format(argv=argv)], env=env,
                              capture_output=True, text=True)
        heavy = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY")]
        print(f"modules `{name}` imports: {heavy[-1][6:] if heavy else proc.stderr[-500:]}")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; CPU cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
