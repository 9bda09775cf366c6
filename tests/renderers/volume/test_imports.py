"""Importing the volume, encoding and isosurface packages compiles nothing and does not import Warp."""

import subprocess
import sys


def test_packages_do_not_import_warp():
    code = (
        "import sys\n"
        "import recon.renderers.volume, recon.renderers.encoding, recon.renderers.isosurface\n"
        "for m in (recon.renderers.volume, recon.renderers.encoding, recon.renderers.isosurface):\n"
        "    assert all(hasattr(m, name) for name in m.__all__), m.__name__\n"
        "assert 'warp' not in sys.modules, sorted(k for k in sys.modules if 'warp' in k)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
