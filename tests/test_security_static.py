"""The package never unpickles, evaluates or shells out, except where docs/security.md
says: the checkpoint importer is the only pickle reader."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nvir_agent

PACKAGE = Path(nvir_agent.__file__).parent
FORBIDDEN = {
    # torch.load only with torch's own allow-list (training's ImageNet and resume files)
    r"\btorch\.load\((?![^)]*weights_only=True)": "torch.load unpickles; use safetensors",
    r"\bpickle\.(loads?|Unpickler)\b": "only model/ckpt_import.py reads pickles",
    r"(?<![\w.])(eval|exec)\(": "no code from data",
    r"\byaml\.load\(": "no YAML object construction",
    r"shell\s*=\s*True": "no shell",
    r"\bos\.system\(": "no shell",
    r"\.(bind|listen)\(": "the agent opens no network port",
}
ALLOWED = {
    ("model/ckpt_import.py", r"\bpickle\.(loads?|Unpickler)\b"),
    # the agent's own analysis stages, pickled by the agent for its image worker
    # processes (as multiprocessing does anyway); never bytes from a file
    ("pipeline/workers.py", r"\bpickle\.(loads?|Unpickler)\b"),
}


def test_no_module_unpickles_evaluates_shells_out_or_listens():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text(encoding="utf-8")
        for pattern, why in FORBIDDEN.items():
            if (rel, pattern) in ALLOWED:
                continue
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{rel}:{line}: {m.group(0)} ({why})")
    assert not found, "\n".join(found)


# Fragments reviewed to be fixed SQL (column lists, "?" placeholders, dialect words),
# never values: an f-string handed to execute() may interpolate only these.
SQL_FRAGMENTS = {"where", "lock", "sql", "IMAGE_COLUMNS", "self._sql.skip_locked",
                 "self._sql.image_identity"}


def test_sql_handed_to_execute_interpolates_no_values():
    """Statements are parameterised: an f-string passed to execute() may only join the
    reviewed fixed fragments above; %-formatting and .format() are not used at all."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany") and node.args):
                continue
            sql = node.args[0]
            where = f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}"
            if isinstance(sql, ast.JoinedStr):
                for part in sql.values:
                    if isinstance(part, ast.FormattedValue):
                        text = ast.unparse(part.value)
                        if text not in SQL_FRAGMENTS:
                            found.append(f"{where}: {{{text}}}")
            elif isinstance(sql, ast.BinOp) and isinstance(sql.op, ast.Mod):
                found.append(f"{where}: % formatting")
            elif (isinstance(sql, ast.Call) and isinstance(sql.func, ast.Attribute)
                  and sql.func.attr == "format"):
                found.append(f"{where}: .format()")
    assert not found, "\n".join(found)
