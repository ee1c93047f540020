"""Python standard library functions: docstring <-> code (PSF licence).

Functions and methods with a docstring of at least a sentence are walked with ``ast`` in the
pure-Python modules of the running interpreter. The code is the function's source with its
docstring removed, so the query text never appears verbatim in the document. One function is one
source item. The stdlib differs between Python versions, so a rebuild from the running
interpreter is only used when its version matches the pinned one; otherwise the shipped copy is.
"""

from __future__ import annotations

import ast
import sys
import sysconfig
from pathlib import Path

from .common import SourceUnavailable

NAME = "stdlib"
PYTHON_VERSION = "3.11.7"
VERSION = f"CPython {PYTHON_VERSION} standard library (Lib/*.py, test suites and private modules excluded)"
LICENSE = "PSF License Agreement (Python Software Foundation)"
MIN_DOC_WORDS, MAX_CODE_CHARS, MIN_CODE_LINES = 5, 2500, 3
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "ensurepip", "venv", "__pycache__"}


def _strip_docstring(node: ast.AST, source_lines: list[str]) -> str:
    """The function's source text without its docstring statement (dedented to column 0)."""
    doc = node.body[0]
    start, end = node.lineno - 1, node.end_lineno
    if getattr(node, "decorator_list", None):
        start = node.decorator_list[0].lineno - 1
    lines = source_lines[start: doc.lineno - 1] + source_lines[doc.end_lineno: end]
    indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    return "\n".join(l[indent:] for l in lines).strip("\n")


def functions_of(path: Path, module: str) -> list[dict]:
    """Documented functions of one file as ``{id, docstring, code}``."""
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines, records = source.splitlines(), []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(child)
                if not doc or len(doc.split()) < MIN_DOC_WORDS or child.name.startswith("__"):
                    continue
                code = _strip_docstring(child, lines)
                if code.count("\n") + 1 >= MIN_CODE_LINES and len(code) <= MAX_CODE_CHARS:
                    records.append(dict(id=f"{module}.{prefix}{child.name}", docstring=doc, code=code))

    visit(tree, "")
    return records


def records_from_stdlib(root: Path) -> list[dict]:
    """Documented functions of the stdlib at ``root``, sorted by id."""
    records, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if _SKIP_DIRS & set(parts) or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        module = ".".join(p for p in parts if p != "__init__")
        for record in functions_of(path, module):
            if record["id"] not in seen:
                seen.add(record["id"])
                records.append(record)
    return sorted(records, key=lambda r: r["id"])


def extract(workdir: Path) -> list[dict]:
    running = ".".join(map(str, sys.version_info[:3]))
    if running != PYTHON_VERSION:
        raise SourceUnavailable(f"running Python {running}, the pinned stdlib is {PYTHON_VERSION}")
    return records_from_stdlib(Path(sysconfig.get_paths()["stdlib"]))
