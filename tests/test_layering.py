"""The package's layering: the floors of docs/architecture.md, checked against every module's imports.

The floor table in docs/architecture.md is the only statement of the rules; this file reads it.
Imports are read with ``ast`` from every ``gritkit/**/*.py``: at module level and inside functions
alike, relative imports resolved. ``from X import y`` is an import of the module ``X.y`` when there
is one, else of ``X``. The checks run on the real tree and, to show that each can fail, on a small
package written for the purpose.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gritkit"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_ROOT_MODULES = 6

FLOOR_HEADER = ("floor", "packages and modules", "may import")
NEVER_HEADER = ("module or package", "never imports, even indirectly")


# --- reading the code -------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int


@dataclass
class Scan:
    package: str
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)
    private: list[str] = field(default_factory=list)  # "importer:line: how", one per private name reached
    unresolved: list[str] = field(default_factory=list)  # "importer:line: name" of a module that is not there

    def graph(self) -> dict[str, set[str]]:
        edges: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            edges[imp.importer].add(imp.target)
        return edges


def module_name(path: Path, package_dir: Path) -> str:
    parts = (package_dir.name,) + path.relative_to(package_dir).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def scan(package_dir: Path) -> Scan:
    package = package_dir.name
    modules = {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    result = Scan(package, modules)

    def ours(name: str | None) -> bool:
        return bool(name) and (name == package or name.startswith(package + "."))

    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        bound: dict[str, str] = {}  # a local name -> the gritkit module it stands for

        def add(target: str | None, line: int) -> None:
            if target and target != name:
                result.imports.append(Import(name, target, line))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not ours(alias.name):
                        continue
                    if alias.name not in modules:
                        result.unresolved.append(f"{name}:{node.lineno}: import {alias.name}")
                        continue
                    add(alias.name, node.lineno)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not ours(source):
                    continue
                if source not in modules:
                    result.unresolved.append(f"{name}:{node.lineno}: from {source} import ...")
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        add(submodule, node.lineno)
                        bound[alias.asname or alias.name] = submodule
                    else:
                        add(source, node.lineno)
                    if is_private(alias.name):
                        result.private.append(f"{name}:{node.lineno}: from {source} import {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                dotted = _dotted(node.value)
                if dotted is None:
                    continue
                head, _, rest = dotted.partition(".")
                if head not in bound:
                    continue
                target = bound[head] + ("." + rest if rest else "")
                if target in modules and target != name:
                    result.private.append(f"{name}:{node.lineno}: {dotted}.{node.attr}")
    by_place = lambda entry: (entry.split(":")[0], int(entry.split(":")[1]))  # noqa: E731
    result.private.sort(key=by_place)
    result.unresolved.sort(key=by_place)
    return result


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


# --- reading the doc ----------------------------------------------------------------------------


def markdown_table(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows of the one table whose header row is ``header``."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and tuple(cells) == header:
            rows = []
            for row in lines[i + 2:]:
                if not row.lstrip().startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            found.append(rows)
    if len(found) != 1:
        raise ValueError(f"expected one table headed {' | '.join(header)}, found {len(found)}")
    return found[0]


def names_in(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def read_floors(text: str) -> dict[str, int]:
    """Entry (a module or package) -> its floor; the table's own form is checked on the way."""
    entries: dict[str, int] = {}
    floors = []
    for cells in markdown_table(text, FLOOR_HEADER):
        if len(cells) != 3 or not cells[0].isdigit():
            raise ValueError(f"floor table row is not `| number | names | may import |`: {cells}")
        floor = int(cells[0])
        floors.append(floor)
        allowed = re.fullmatch(r"floors? (\d+)(?:-(\d+))?", cells[2])
        if not allowed or int(allowed[1]) != 1 or int(allowed[2] or allowed[1]) != floor:
            raise ValueError(f"floor {floor} may import {cells[2]!r}: the rule is its own floor and below, "
                             f"written `floor 1` or `floors 1-{floor}`")
        names = names_in(cells[1])
        if not names:
            raise ValueError(f"floor {floor} names no module")
        for name in names:
            if name in entries:
                raise ValueError(f"{name} is on floors {entries[name]} and {floor}")
            entries[name] = floor
    if floors != list(range(1, len(floors) + 1)):
        raise ValueError(f"floors must be numbered 1, 2, ... from the bottom, found {floors}")
    return entries


def covers(entry: str, module: str, package: str) -> bool:
    """A package entry covers its subtree; the root package's entry covers its ``__init__`` only."""
    return module == entry or (entry != package and module.startswith(entry + "."))


def assignment(modules, entries: dict[str, int], package: str) -> tuple[dict[str, int], list[str]]:
    """Module -> floor, and the problems: modules on no floor or on several, entries matching nothing."""
    floor_of, problems = {}, []
    for module in sorted(modules):
        matches = [entry for entry in entries if covers(entry, module, package)]
        if len(matches) != 1:
            problems.append(f"{module}: on {len(matches)} floor entries {matches}, not exactly one")
        else:
            floor_of[module] = entries[matches[0]]
    for entry in entries:
        if not any(covers(entry, module, package) for module in modules):
            problems.append(f"{entry}: in the floor table but no such module or package")
    return floor_of, problems


# --- the checks ---------------------------------------------------------------------------------


def upward_imports(found: Scan, floor_of: dict[str, int]) -> list[str]:
    offenders = []
    for imp in found.imports:
        if imp.importer in floor_of and imp.target in floor_of and floor_of[imp.target] > floor_of[imp.importer]:
            offenders.append(f"{imp.importer}:{imp.line} (floor {floor_of[imp.importer]}) imports "
                             f"{imp.target} (floor {floor_of[imp.target]})")
    return sorted(set(offenders))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def connect(node: str) -> None:
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)

    found = []
    for component in components:
        start = min(component)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first inside the component, back to the start
            node = queue.pop(0)
            for child in sorted(graph[node] & component):
                if child == start:
                    found.append(paths[node] + [start])
                    queue = []
                    break
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    queue.append(child)
    return sorted(found)


def reaches(graph: dict[str, set[str]], start: str, forbidden) -> list[str] | None:
    """The import path from ``start`` to a module for which ``forbidden`` is true, if there is one."""
    paths, queue = {start: [start]}, [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child not in paths:
                paths[child] = paths[node] + [child]
                if forbidden(child):
                    return paths[child]
                queue.append(child)
    return None


def never_import_violations(found: Scan, rules: list[list[str]]) -> list[str]:
    graph, offenders = found.graph(), []
    for cells in rules:
        sources, targets = names_in(cells[0]), names_in(cells[1])
        for module in sorted(found.modules):
            if not any(covers(s, module, found.package) for s in sources):
                continue
            path = reaches(graph, module, lambda m: any(covers(t, m, found.package) for t in targets))
            if path:
                offenders.append(" -> ".join(path))
    return offenders


def tree_names(text: str) -> set[str]:
    """The root modules and top-level folders named in the first code block under ``## The tree``."""
    section = text.split("## The tree", 1)[1]
    block = section.split("```", 2)[1]
    return {m[1] for m in re.finditer(r"^  (\S+?\.py|\S+?/)\s", block, re.MULTILINE)}


def root_entries(package_dir: Path) -> set[str]:
    files = {p.name for p in package_dir.glob("*.py")}
    folders = {p.parent.name + "/" for p in package_dir.glob("*/__init__.py")}
    return files | folders


def summary_problems(package_dir: Path) -> list[str]:
    problems = []
    for init in sorted(package_dir.rglob("__init__.py")):
        if init.parent == package_dir:
            continue
        relative = init.relative_to(package_dir.parent)
        body = ast.parse(init.read_text()).body
        first = body[0] if body else None
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            problems.append(f"{relative}: does not start with a docstring")
            continue
        lines = first.value.value.strip("\n").splitlines() or [""]
        if not lines[0].strip() or (len(lines) > 1 and lines[1].strip()):
            problems.append(f"{relative}: the docstring's first line is not a summary on its own line "
                            f"(first line {lines[0]!r}, then {lines[1] if len(lines) > 1 else ''!r})")
    return problems


# --- on the real tree -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return ARCHITECTURE.read_text()


@pytest.fixture(scope="module")
def found() -> Scan:
    result = scan(PACKAGE)
    assert len(result.modules) > 50 and result.imports, "the scan found no real tree"
    return result


@pytest.fixture(scope="module")
def floor_of(doc, found) -> dict[str, int]:
    floor_of, _ = assignment(found.modules, read_floors(doc), found.package)
    return floor_of


def test_every_module_is_on_exactly_one_floor(doc, found):
    _, problems = assignment(found.modules, read_floors(doc), found.package)
    assert problems == [], "floor table of docs/architecture.md against the modules:\n" + "\n".join(problems)


def test_no_module_imports_from_a_floor_above_its_own(found, floor_of):
    offenders = upward_imports(found, floor_of)
    assert offenders == [], "imports from a higher floor:\n" + "\n".join(offenders)


def test_no_import_cycle(found):
    loops = cycles(found.graph())
    assert loops == [], "import cycles:\n" + "\n".join(" -> ".join(loop) for loop in loops)


def test_every_import_names_a_module_that_exists(found):
    assert found.unresolved == [], "imports of modules that are not there:\n" + "\n".join(found.unresolved)


def test_no_private_name_imported_from_another_module(found):
    assert found.private == [], "private names used across modules:\n" + "\n".join(found.private)


def test_the_root_holds_few_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_ROOT_MODULES, f"{len(modules)} modules at gritkit/'s root: {modules}"


def test_every_subpackage_starts_with_a_one_line_summary():
    problems = summary_problems(PACKAGE)
    assert problems == [], "\n".join(problems)


def test_the_tree_in_the_doc_names_every_root_module_and_folder(doc):
    named, real = tree_names(doc), root_entries(PACKAGE)
    assert named == real, (f"docs/architecture.md's tree lacks {sorted(real - named)} "
                           f"and names {sorted(named - real)}, which do not exist")


def test_never_imports_rules_hold(doc, found):
    rules = markdown_table(doc, NEVER_HEADER)
    assert rules, "the never-imports table is empty"
    offenders = never_import_violations(found, rules)
    assert offenders == [], "forbidden import paths:\n" + "\n".join(offenders)


def test_no_library_module_imports_a_recipe(found, floor_of):
    """Recipes are users of the library: only the floors above theirs (the command line) reach them."""
    recipes = floor_of["gritkit.recipes.quickstart"]
    above = sorted({m.split(".")[1] if "." in m else m for m, f in floor_of.items() if f > recipes})
    assert above == ["cli", "commands", "gritkit"], f"modules above gritkit.recipes' floor: {above}"
    offenders = [f"{imp.importer}:{imp.line}" for imp in found.imports
                 if imp.target.startswith("gritkit.recipes") and floor_of.get(imp.importer, 0) <= recipes
                 and not imp.importer.startswith("gritkit.recipes")]
    assert offenders == []


# --- each check can fail -------------------------------------------------------------------------


BAD_DOC = """# pkg

## The tree

```
pkg/
  __init__.py   the package
  low.py        the bottom
  high/         the top
  gone/         a folder that is not there
```

| floor | packages and modules | may import |
|---|---|---|
| 1 | `pkg.low` | floor 1 |
| 2 | `pkg.high`, `pkg` | floors 1-2 |

| module or package | never imports, even indirectly |
|---|---|
| `pkg.low` | `pkg.high.b` |
"""


@pytest.fixture
def bad_package(tmp_path) -> Path:
    package = tmp_path / "pkg"
    (package / "high").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The package."""\n')
    (package / "low.py").write_text("def f():\n    from .high.a import thing  # upward, inside a function\n")
    (package / "stray.py").write_text("import pkg.nothing\nfrom .gone import x\n")
    (package / "high" / "__init__.py").write_text('"""A summary that wraps\nonto a second line."""\n')
    (package / "high" / "a.py").write_text("from . import b\nfrom ..low import _hidden\nthing = 1\n")
    (package / "high" / "b.py").write_text("import pkg.high.a as a\nvalue = a._secret\n")
    return package


def test_the_checks_find_what_is_wrong(bad_package):
    found = scan(bad_package)
    assert set(found.modules) == {"pkg", "pkg.low", "pkg.stray", "pkg.high", "pkg.high.a", "pkg.high.b"}
    floor_of, problems = assignment(found.modules, read_floors(BAD_DOC), found.package)
    assert problems == ["pkg.stray: on 0 floor entries [], not exactly one"]
    assert upward_imports(found, floor_of) == ["pkg.low:2 (floor 1) imports pkg.high.a (floor 2)"]
    assert cycles(found.graph()) == [["pkg.high.a", "pkg.high.b", "pkg.high.a"]]
    assert found.unresolved == ["pkg.stray:1: import pkg.nothing", "pkg.stray:2: from pkg.gone import ..."]
    assert found.private == ["pkg.high.a:2: from pkg.low import _hidden", "pkg.high.b:2: a._secret"]
    assert summary_problems(bad_package) == [
        "pkg/high/__init__.py: the docstring's first line is not a summary on its own line "
        "(first line 'A summary that wraps', then 'onto a second line.')"]
    assert never_import_violations(found, markdown_table(BAD_DOC, NEVER_HEADER)) == [
        "pkg.low -> pkg.high.a -> pkg.high.b"]
    assert tree_names(BAD_DOC) - root_entries(bad_package) == {"gone/"}
    assert root_entries(bad_package) - tree_names(BAD_DOC) == {"stray.py"}


@pytest.mark.parametrize("row, message", [
    ("| 2 | `pkg.high` | floors 1-3 |", "the rule is its own floor and below"),
    ("| 3 | `pkg.high` | floors 1-3 |", "numbered 1, 2"),
    ("| 2 | `pkg.low` | floors 1-2 |", "on floors 1 and 2"),
])
def test_a_malformed_floor_table_is_refused(row, message):
    text = BAD_DOC.replace("| 2 | `pkg.high`, `pkg` | floors 1-2 |", row)
    with pytest.raises(ValueError, match=message):
        read_floors(text)


def test_an_entry_naming_nothing_is_reported(bad_package):
    found = scan(bad_package)
    entries = read_floors(BAD_DOC) | {"pkg.missing": 1}
    _, problems = assignment(found.modules, entries, found.package)
    assert "pkg.missing: in the floor table but no such module or package" in problems
