"""The code's plan, checked: no private name imported across files, no import circle, UI pages
that do not import each other, and a torch-free contract.

Rules (decided in issue 21):
- The project's code is the packages ia3app, ui, jobs, storage, common, the benches (bench/) and
  app.py; every rule below holds for all of it. tests/ is exempt: a test may reach internals
  (monkeypatch a private function, read a private cache) to check what they do, and nothing is
  built on a test. A bench is a program others run and read, so it uses public names only.
- A ``from X import _name`` (or ``import X._private``) where X is another project module is
  refused: a name shared between files is public API and carries a public name.
- So is reading a private name off an imported project module (``from ui import data_page as U``
  then ``U._PARSED``): the same sharing, spelled as an attribute. Only module objects are
  followed (a name bound by an import, and its submodules); ``obj._x`` on an instance, a
  third-party module's private name, and ``getattr`` with a string are not this rule's business.
- Every ``import`` counts for circles, at module level *and* inside functions: an import put in a
  function to dodge a circle still makes the two modules depend on each other. Only imports under
  ``if TYPE_CHECKING:`` are left out (they never run).
- ``from pkg import Name`` where ``pkg/__init__.py`` offers Name lazily (``lazy_exports``) is an
  edge to the module that defines Name, which is what runs when Name is used.
- Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those package faces are lazy
  (they import only ``ia3app.lazy_exports``), so they are counted as the modules they are.
- UI pages (``ui/*_page.py``) never import one another, not even under TYPE_CHECKING: the app
  layout (``ui/app_layout.py``) owns navigation.
- Private names are refused under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ia3app", "ui", "jobs", "storage", "common", "bench")
SINGLE_FILES = ("app.py",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[_module_name(path)] = path
    for single in SINGLE_FILES:
        files[_module_name(ROOT / single)] = ROOT / single
    return files


MODULES = project_files()
PACKAGE_NAMES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _lazy_faces() -> dict[str, dict[str, str]]:
    """package -> {public name: defining module} read from each ``lazy_exports(__name__, {...})``."""
    faces: dict[str, dict[str, str]] = {}
    for package in PACKAGE_NAMES:
        tree = ast.parse(MODULES[package].read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports"
                    and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
                faces[package] = {ast.literal_eval(k): f"{package}.{ast.literal_eval(v)}"
                                  for k, v in zip(node.args[1].keys, node.args[1].values)}
    return faces


FACES = _lazy_faces()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _project_module(name: str) -> str | None:
    """The longest project module that ``name`` is or lies in (None if not the project's)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


@functools.lru_cache(maxsize=None)
def _parse(module: str) -> ast.Module:
    """The module's syntax tree, read once (the checks below only read it)."""
    path = MODULES[module]
    return ast.parse(path.read_text(), filename=str(path))


def _import_aliases(module: str, tree: ast.AST, skipped: set[int]) -> list[tuple[str, ast.alias, bool, int]]:
    """(source module, alias, whether a ``from`` import, line) for each name imported in ``tree`` outside
    ``skipped``; for ``import a.b`` the source is ``a.b`` itself."""
    found: list[tuple[str, ast.alias, bool, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, alias, False, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = _resolve_relative(module, MODULES[module].name == "__init__.py", node.level, node.module)
            found.extend((source, alias, True, node.lineno) for alias in node.names)
    return found


def imports_of(module: str, type_only: bool = False) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import that runs in ``module`` (with
    ``type_only``, also those under ``if TYPE_CHECKING:``)."""
    tree = _parse(module)
    skipped = set() if type_only else _type_checking_nodes(tree)
    return [(source, alias.name if is_from else None, line)
            for source, alias, is_from, line in _import_aliases(module, tree, skipped)]


def dependency_edges(module: str, type_only: bool = False) -> dict[str, int]:
    """Project modules that ``module`` imports -> the first line that does it."""
    edges: dict[str, int] = {}
    for source, name, line in imports_of(module, type_only):
        targets: list[str] = []
        if name is not None and f"{source}.{name}" in MODULES:
            targets.append(f"{source}.{name}")  # from pkg import submodule
        elif name is not None and source in FACES and name in FACES[source]:
            targets.append(FACES[source][name])  # from pkg import LazyName
        else:
            owner = _project_module(source)
            if owner is not None:
                targets.append(owner)
        for target in targets:
            if target != module:
                edges.setdefault(target, line)
    return edges


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> list[str]:
    bad = []
    for module in MODULES:
        for source, name, line in imports_of(module, type_only=True):
            if _project_module(source) is None or source == module:
                continue
            if name is None:
                if any(_is_private(p) for p in source.split(".")):
                    bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: import {source}")
            elif _is_private(name):
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: from {source} import {name}")
    return bad


def _module_names(module: str, tree: ast.AST) -> dict[str, str]:
    """Names that imports in ``tree`` bind to project modules -> those modules: ``import a.b`` binds ``a``,
    ``import a.b as m`` binds ``m`` to ``a.b``, ``from a import b`` (b a module) binds ``b`` to ``a.b``."""
    names: dict[str, str] = {}
    for source, alias, is_from, _ in _import_aliases(module, tree, set()):
        if is_from:
            target, name = f"{source}.{alias.name}", alias.asname or alias.name
        elif alias.asname:
            target, name = source, alias.asname
        else:
            target = name = source.split(".")[0]
        if target in MODULES:
            names[name] = target
    return names


def _module_at(node: ast.AST, names: dict[str, str]) -> str | None:
    """The project module an expression names (``U``, ``jobs.queue``), or None."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        parent = _module_at(node.value, names)
        if parent is not None and f"{parent}.{node.attr}" in MODULES:
            return f"{parent}.{node.attr}"
    return None


def private_attributes(module: str, tree: ast.AST) -> list[str]:
    """``M._name`` in ``tree`` where M is another project module that ``module`` imported."""
    names = _module_names(module, tree)
    return [f"{MODULES[module].relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and _is_private(node.attr)
            and _module_at(node.value, names) not in (None, module)]


def import_circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {module: sorted(dependency_edges(module)) for module in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in graph:
        if module not in index:
            visit(module)
    return circles


def _describe(circle: list[str]) -> str:
    members = set(circle)
    lines = []
    for module in circle:
        for target, line in sorted(dependency_edges(module).items()):
            if target in members:
                lines.append(f"  {MODULES[module].relative_to(ROOT)}:{line} -> {target}")
    return "\n".join(lines)


def test_the_checker_sees_the_whole_project():
    # Guards the checks below against passing because they looked at nothing.
    assert len(MODULES) > 80
    assert "ia3app.templates.spec" in MODULES and "ui.main" in MODULES and "app" in MODULES
    assert "bench.bench_render" in MODULES and "bench.tfew_data" in MODULES
    assert FACES["ia3app.templates"]["TemplateSpec"] == "ia3app.templates.spec"
    edges = dependency_edges("ia3app.recipe.run_job")
    assert "ia3app.recipe.train" in edges


def test_no_private_name_is_imported_across_files():
    bad = private_imports() + [use for module in MODULES for use in private_attributes(module, _parse(module))]
    assert not bad, "private names used across files:\n" + "\n".join(bad)


def test_the_private_name_check_sees_a_private_name_read_off_an_imported_module():
    # Guards the check above against passing because it looked at nothing: the bench's old spelling is
    # caught, through an alias and through a dotted import; a public name and an instance's are not.
    tree = ast.parse("from ui import data_page as U\nimport ia3app.templates.rendering\n"
                     "U._PARSED.clear()\nia3app.templates.rendering._context({}, {})\nU.parse\nself._seen\n")
    assert sorted(private_attributes("bench.bench_upload", tree)) == [
        "bench/bench_upload.py:3: U._PARSED", "bench/bench_upload.py:4: ia3app.templates.rendering._context"]


def test_no_import_circle_anywhere():
    circles = import_circles()
    assert not circles, "import circles:\n" + "\n\n".join(_describe(c) for c in circles)



def test_ui_pages_do_not_import_each_other():
    # Not even for type hints: the app layout (ui.app_layout) owns navigation and hands a page a
    # ui.shared.Fill for each event that fills another page.
    pages = [m for m in MODULES if m.startswith("ui.") and m.endswith("_page")]
    assert {"ui.data_page", "ui.template_page", "ui.train_page", "ui.jobs_page", "ui.results_page",
            "ui.library_page"} <= set(pages)
    bad = [f"{m} imports {t}" for m in pages for t in dependency_edges(m, type_only=True) if t in pages]
    assert not bad, "\n".join(bad)


TORCH_FREE = [
    "ia3app.jobtypes", "ia3app.jobtypes.requests", "ia3app.jobtypes.progress", "ia3app.jobtypes.results",
    "ia3app.jobtypes.json_text", "ia3app.config", "ia3app.example", "ia3app.errors",
    "ia3app.listing", "ia3app.tables", "ia3app.tables.csv_io", "ia3app.tables.checks", "ia3app.tables.splits",
    "ia3app.templates", "ia3app.templates.spec", "ia3app.templates.rendering", "ia3app.templates.column_refs",
    "ia3app.templates.sandbox", "ia3app.templates.library", "ia3app.templates.task_shapes",
    "ia3app.templates.promptsource", "ia3app.templates.precheck", "ia3app.templates.truncate",
    "ia3app.templates.render_limits", "ia3app.evaluation.report", "ia3app.evaluation.uncertainty",
    "ia3app.adapters.folder_config",
]
HEAVY = ("torch", "transformers")


def _heavy_modules_after_importing(modules: list[str]) -> list[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_the_torch_free_contract_and_every_package_face_import_without_torch():
    # The job contract, the data tables and the templates are used by the web process, the CLI's
    # data commands and workers before any model exists: they must not pull torch or transformers.
    faces = sorted(m for m in PACKAGE_NAMES if m.startswith("ia3app"))
    assert _heavy_modules_after_importing(TORCH_FREE + faces) == []
    # ...and the check sees torch when it is imported (a module that needs it does pull it).
    assert "torch" in _heavy_modules_after_importing(["ia3app.recipe.losses"])


def test_the_local_engine_and_the_ray_client_implement_one_serving_interface():
    import inspect

    from ia3app.serving.engine import ServingEngine
    from ia3app.serving.interface import Serving

    implementations = [ServingEngine]
    try:
        from jobs.ray_serve import RayServing
    except ImportError:  # ray not installed: only the local engine to check
        pass
    else:
        implementations.append(RayServing)
    members = [name for name, value in vars(Serving).items() if inspect.isfunction(value) and not name.startswith("_")]
    assert {"info", "submit", "predict", "predict_csv", "stats", "close"} <= set(members)
    for cls in implementations:
        for name in members:
            assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
            wanted = list(inspect.signature(getattr(Serving, name)).parameters)
            offered = list(inspect.signature(getattr(cls, name)).parameters)
            assert offered[: len(wanted)] == wanted, f"{cls.__name__}.{name}{offered} vs {wanted}"
    engine = ServingEngine()
    try:
        assert isinstance(engine, Serving)
    finally:
        engine.close()
