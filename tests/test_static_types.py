"""pyright (basic) passes on recon/, renderers/, datasets/ and viewer/ (docs/reliability.md, "Type checks").

pyright checks the package as installed: scripts/pyright_tree.py builds build/pyright/recon, a symlinked tree that
maps the package-dir folders into ``recon`` (pyright cannot follow setuptools' package-dir mapping), and
pyrightconfig.json points pyright at it. The test fails with pyright's own messages, paths given as in the
repository.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.typecheck import should_check

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYRIGHT_TIMEOUT_S = 900  # ~30 CPU-seconds; minutes of wall time on a loaded 2-core machine

_spec = importlib.util.spec_from_file_location("pyright_tree", ROOT / "scripts" / "pyright_tree.py")
pyright_tree = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pyright_tree)


def _source_path(path: str) -> str:
    """A path inside build/pyright/recon as the repository file it links to."""
    p = pathlib.Path(path)
    return os.path.relpath(p.resolve() if p.is_symlink() else p, ROOT)


def test_tree_maps_every_package_dir_folder(tmp_path):
    """The symlinked tree holds each mapped folder under recon/ and links to the real source files."""
    package = pyright_tree.build(ROOT, tmp_path)
    for name in ("renderers", "datasets", "viewer"):
        link = package / name / "__init__.py"
        assert link.is_symlink() and link.resolve() == ROOT / name / "__init__.py"
    assert (package / "core" / "__init__.py").resolve() == ROOT / "recon" / "core" / "__init__.py"
    assert not (package / "renderers" / "__pycache__").exists()


def test_runtime_hook_selection():
    """The runtime hook checks recon's modules and api boundaries, and skips only the Warp kernel modules."""
    assert should_check("recon.renderers.volume.api")
    assert should_check("recon.core.camera")
    assert should_check("recon.renderers.volume.warp_impl")
    assert not should_check("recon.renderers.volume.warp_kernels")
    assert not should_check("recon.renderers.isosurface.flexicubes_warp_kernels")
    assert not should_check("recon.cli._doctor_kernels")
    assert not should_check("reconx.core")
    assert not should_check("torch.nn")


def _config_for(tree: pathlib.Path) -> pathlib.Path:
    """pyrightconfig.json pointed at the tree ``tree`` (a private copy: concurrent runs never share a tree)."""
    config = json.loads((ROOT / "pyrightconfig.json").read_text())
    config["include"] = [str(tree / "recon")]
    config["executionEnvironments"] = [{"root": str(tree)}]
    config["venvPath"] = str(ROOT)
    path = tree / "pyrightconfig.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_pyright_basic_passes(tmp_path):
    if importlib.util.find_spec("pyright") is None:
        pytest.skip("pyright is not installed (pip install -e '.[dev]' installs it; scripts/setup.sh does)")
    pyright_tree.build(ROOT, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "-p", str(_config_for(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PYRIGHT_TIMEOUT_S,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"pyright did not run (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    lines = [
        f"{_source_path(d['file'])}:{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '')})"
        for d in errors
    ]
    assert report["summary"]["filesAnalyzed"] > 100, report["summary"]  # the tree really was checked
    assert not errors, f"pyright: {len(errors)} errors\n" + "\n".join(lines)
