"""Commands that do not score start without the heavy libraries.

`nvir-agent status` is what an operator (or a monitoring script) runs to see
whether the agent is alive; it must answer at once, so it may not pull in
torch, OpenCV or Qt (each costs from a few hundred milliseconds to seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "cv2", "PySide6", "onnxruntime", "urllib.request")

PROBE = """
import json, sys
from nvir_agent.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.__stderr__)
"""


@pytest.mark.parametrize("argv", [["--version"], ["status"], ["status", "--json"]])
def test_commands_that_do_not_score_import_no_torch_opencv_or_qt(tmp_path, argv):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\ndatabase = "{(tmp_path / "db.sqlite3").as_posix()}"\n',
                   encoding="utf-8")
    args = argv if argv == ["--version"] else [*argv, "--config", str(cfg)]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    imported = json.loads(proc.stderr.strip().splitlines()[-1])
    assert imported == [], f"nvir-agent {' '.join(argv)} imported {imported}"
