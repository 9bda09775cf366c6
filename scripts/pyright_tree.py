"""Builds build/pyright/recon, a symlinked view of the installed package layout, for pyright.

setuptools maps renderers/, datasets/, viewer/ and configs/ into the `recon` namespace through
`[tool.setuptools.package-dir]` (pyproject.toml); the editable install resolves them with an import hook that
static checkers cannot follow, so pyright alone reports every `recon.renderers.*` import as unresolved. This
script builds the tree as installed, out of symlinks:

    build/pyright/recon/<path>.py            -> recon/<path>.py
    build/pyright/recon/renderers/<path>.py  -> renderers/<path>.py    (likewise datasets, viewer, configs)

(real folders, one symlink per Python file: pyright does not descend into symlinked folders)
and pyrightconfig.json checks that tree with `build/pyright` as the execution root, so `import recon.renderers`
resolves to the real source files. Usage: `python scripts/pyright_tree.py && pyright` (tests/test_static_types.py
does both). Re-running it is cheap and picks up added or removed modules.
"""

import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "pyright"
# The package-dir mapping of pyproject.toml: sub-package name -> folder at the repository root.
MAPPED = {"renderers": "renderers", "datasets": "datasets", "viewer": "viewer", "configs": "configs"}


def build(root: pathlib.Path = ROOT, tree: pathlib.Path = TREE) -> pathlib.Path:
    """(Re)creates the symlinked tree under ``tree`` and returns the path of its ``recon`` package."""
    package = tree / "recon"
    if package.exists() or package.is_symlink():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    _link_sources(root / "recon", package)
    for name, folder in MAPPED.items():
        _link_sources(root / folder, package / name)
    return package


def _link_sources(source: pathlib.Path, target: pathlib.Path) -> None:
    for path in sorted(source.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(source)
        if source.name == "recon" and relative.parts[0] in MAPPED:
            continue
        link = target / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(path, link.parent), link)


if __name__ == "__main__":
    print(build(), file=sys.stderr)
