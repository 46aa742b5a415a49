"""The reference recomputation must share nothing with the pipeline it checks.

recompute.py may not import `crm_pipeline`, Spark, Delta or DuckDB in any form: no `import`, no
`from ... import`, no `__import__` / `importlib` / `exec` / `eval`, no path tricks that reach the
pipeline's sources, and no string naming a forbidden module (which a dynamic import would need).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

RECOMPUTE = Path(__file__).with_name("recompute.py")
FORBIDDEN_MODULES = ("crm_pipeline", "pyspark", "delta", "delta_spark", "deltalake", "duckdb")
FORBIDDEN_NAMES = ("__import__", "import_module", "exec", "eval", "compile", "sys.path", "find_spec")
FORBIDDEN_TEXT = re.compile(r"crm_pipeline|pyspark|deltalake|delta_spark|duckdb|\bschemas/|\bjobs/")


def _forbidden_module(name: str | None) -> bool:
    top = (name or "").split(".")[0]
    return top in FORBIDDEN_MODULES


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def violations(source: str) -> list[str]:
    """Every way `source` imports, or could import or read, the pipeline."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _forbidden_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(f"line {node.lineno}: relative import")
            elif _forbidden_module(node.module) or (node.module or "").split(".")[0] in ("importlib", "runpy"):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name in FORBIDDEN_NAMES or name.split(".")[0] in ("importlib", "runpy"):
                found.append(f"line {node.lineno}: uses {name}")
        elif isinstance(node, ast.alias) and node.name.split(".")[0] in ("importlib", "runpy"):
            found.append(f"line {getattr(node, 'lineno', '?')}: imports {node.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if FORBIDDEN_TEXT.search(node.value):
                found.append(f"line {node.lineno}: string {node.value[:40]!r}")
    return found


def test_recompute_does_not_import_or_read_the_pipeline():
    assert violations(RECOMPUTE.read_text(encoding="utf-8")) == []


def test_recompute_imports_only_the_standard_library_pandas_and_numpy():
    tree = ast.parse(RECOMPUTE.read_text(encoding="utf-8"))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            tops.add((node.module or "").split(".")[0])
    third_party = {t for t in tops if t not in sys.stdlib_module_names and t != "__future__"}
    assert third_party == {"pandas", "numpy"}


@pytest.mark.parametrize("source", [
    "import crm_pipeline",
    "import crm_pipeline.feeds as feeds",
    "import os, crm_pipeline.ingest.reader",
    "from crm_pipeline import feeds",
    "from crm_pipeline.ingest.reader import read_lines",
    "import pyspark.sql as ps",
    "from pyspark.sql import functions as F",
    "from delta import tables",
    "import delta.tables",
    "import deltalake",
    "import duckdb",
    "def f():\n    import crm_pipeline\n",
    "try:\n    from crm_pipeline import x\nexcept ImportError:\n    pass\n",
    "m = __import__('crm' + '_pipeline')",
    "import importlib\nm = importlib.import_module('x')",
    "from importlib import import_module",
    "name = 'crm_pipeline.feeds'",
    "open('schemas/feeds/cdr_voice.json')",
    "import sys\nsys.path.insert(0, 'x')",
    "exec('import x')",
    "from . import sibling",
])
def test_the_check_catches(source):
    assert violations(source) != []


def test_the_check_accepts_plain_code():
    assert violations("import gzip\nimport pandas as pd\nfrom datetime import timedelta\nx = 'delta'\n") == []


def test_importing_recompute_loads_no_pipeline_module():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('recompute', {str(RECOMPUTE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['recompute'] = module\n"
        "spec.loader.exec_module(module)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r})\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
