"""Import hygiene (STYLE.md sections 1 and 8).

- ``import recon`` and every recon package import without importing Warp (kernels compile lazily);
- every ``__all__`` name resolves;
- ``import datasets`` is not ours (our loaders live at ``recon.datasets`` only);
- the import contracts of ``[tool.importlinter]`` in pyproject.toml hold. ``lint-imports`` itself cannot check
  them here: grimp discovers modules by walking the root package's folder, and ``recon.renderers``,
  ``recon.datasets`` and ``recon.viewer`` live in other folders (setuptools package-dir mapping), so it stops
  at "Missing layer 'recon.renderers'". This module checks the same contracts (direct and indirect imports,
  including imports inside functions) on the source tree, with the mapping applied.
"""

import ast
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {  # as [tool.setuptools.package-dir] in pyproject.toml
    "recon": REPO / "recon",
    "recon.renderers": REPO / "renderers",
    "recon.datasets": REPO / "datasets",
    "recon.viewer": REPO / "viewer",
    "recon.configs": REPO / "configs",
}
# Light modules that are not packages but must also stay Warp-free at import time.
EXTRA_MODULES = ("recon.config", "recon.runs", "recon.cli.main", "recon.cli.doctor", "recon.cli.data")

_PROBE = r"""
import importlib, json, pkgutil, sys

report = {"order": [], "warp_after": {}, "bad_all": [], "import_errors": {}}

def load(name):
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        report["import_errors"][name] = f"{type(exc).__name__}: {exc}"
        return None
    report["order"].append(name)
    report["warp_after"][name] = "warp" in sys.modules
    for attr in getattr(module, "__all__", ()):
        if not hasattr(module, attr):
            report["bad_all"].append(f"{name}.{attr}")
    return module

import recon
report["warp_after_recon"] = "warp" in sys.modules
roots = json.loads(sys.argv[1])
extra = json.loads(sys.argv[2])
for root in roots:
    module = load(root)
    if module is None or not hasattr(module, "__path__"):
        continue
    for info in pkgutil.walk_packages(module.__path__, root + "."):
        if info.ispkg:
            load(info.name)
for name in extra:
    load(name)
try:
    import datasets
    report["datasets_file"] = getattr(datasets, "__file__", None) or "<namespace>"
except ModuleNotFoundError:
    report["datasets_file"] = None
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def import_report(tmp_path_factory) -> dict:
    """Import recon and all its packages in a fresh interpreter, outside the repository folder."""
    cwd = tmp_path_factory.mktemp("import_probe")  # not the repo root: it would put ./datasets on sys.path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(PACKAGE_DIRS)), json.dumps(list(EXTRA_MODULES))],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_recon_does_not_import_warp(import_report):
    assert import_report["warp_after_recon"] is False


def test_packages_import_without_warp(import_report):
    assert not import_report["import_errors"], import_report["import_errors"]
    assert {"recon.core", "recon.cli", "recon.datasets", "recon.renderers", "recon.viewer"} <= set(
        import_report["order"]
    )
    first = next((name for name in import_report["order"] if import_report["warp_after"][name]), None)
    assert first is None, (
        f"importing {first} imported warp; import it lazily inside the function that launches"
    )


def test_all_names_resolve(import_report):
    assert import_report["bad_all"] == []


def test_datasets_is_not_ours(import_report):
    found = import_report["datasets_file"]
    assert found is None or not Path(found).resolve().is_relative_to(REPO), found


# -- import contracts (pyproject.toml [tool.importlinter]) -------------------------------------------------------


def _module_files() -> dict[str, Path]:
    modules = {}
    for root, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue
            modules[".".join([root, *parts])] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a module attribute) belongs to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules) if target.startswith("recon") else None
            if resolved and resolved != module:
                found.add(resolved)
    return found


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {name: _imports_of(name, path, modules) for name, path in modules.items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _chain(graph: dict[str, set[str]], sources: list[str], targets: list[str]) -> list[str] | None:
    """Shortest import chain from any module under ``sources`` to any module under ``targets``."""
    starts = [m for m in graph if any(_within(m, s) for s in sources)]
    parent: dict[str, str | None] = {m: None for m in starts}
    queue = deque(starts)
    while queue:
        current = queue.popleft()
        for nxt in sorted(graph.get(current, ())):
            if nxt in parent:
                continue
            parent[nxt] = current
            if any(_within(nxt, t) for t in targets):
                chain = [nxt]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])
                return chain[::-1]
            queue.append(nxt)
    return None


def _contracts() -> list[dict]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_contracts_are_known():
    kinds = {c["type"] for c in _contracts()}
    assert kinds <= {"layers", "forbidden"}, f"teach tests/test_imports.py the contract types {kinds}"


@pytest.mark.parametrize("contract", _contracts(), ids=lambda c: c["name"])
def test_import_contract(contract, import_graph):
    violations = []
    if contract["type"] == "layers":
        layers = contract["layers"]
        for i, lower in enumerate(layers):
            chain = _chain(import_graph, [lower], layers[:i])
            if chain:
                violations.append(" -> ".join(chain))
    else:
        chain = _chain(import_graph, contract["source_modules"], contract["forbidden_modules"])
        if chain:
            violations.append(" -> ".join(chain))
    assert not violations, f"contract {contract['name']!r} broken by: " + "; ".join(violations)


def test_graph_sees_mapped_packages(import_graph):
    """The checker itself: it finds modules in all mapped folders and a known import edge."""
    assert {"recon.core", "recon.datasets", "recon.renderers", "recon.viewer"} <= set(import_graph)
    assert "recon.core.errors" in import_graph["recon.cli.data"]
    assert "recon.config" in import_graph["recon.runs"]
    graph = {"a.x": {"b.y"}, "b.y": {"c"}, "c": set()}
    assert _chain(graph, ["a"], ["c"]) == ["a.x", "b.y", "c"]
    assert _chain(graph, ["c"], ["a"]) is None


def test_only_cli_imports_the_viewer(import_graph):
    """STYLE.md section 1: the viewer is imported by recon.cli only (it receives a render callback)."""
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph.items()
        for target in targets
        if _within(target, "recon.viewer")
        and not _within(module, "recon.viewer")
        and not _within(module, "recon.cli")
    )
    assert offenders == []
