"""The library never imports a recipe: recipes are users of it (only the command line reaches them)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gritkit"


def test_no_library_module_imports_a_recipe():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("recipes", "commands"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any("recipes" in name.split(".") for name in names):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []
    assert any(PACKAGE.joinpath("recipes").glob("*.py"))  # the check looked at a real tree
