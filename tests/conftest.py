"""Shared fixtures: devices, backends, generators. Device cases skip only here."""

import importlib.util
import os
import pathlib
import sys

import pytest
import torch

# pytest runs with --import-mode=importlib, so the repository root is NOT on sys.path (our datasets/ folder must
# never shadow Hugging Face's `datasets`). Register this folder as the package `tests` so that test modules can
# share helpers with `from tests.tolerances import tol`.
if "tests" not in sys.modules:
    _here = pathlib.Path(__file__).parent
    _spec = importlib.util.spec_from_file_location(
        "tests", _here / "__init__.py", submodule_search_locations=[str(_here)]
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["tests"] = _module
    _spec.loader.exec_module(_module)

# Runtime shape and type checks (docs/reliability.md, "Type checks"): every function and dataclass of recon is
# checked by beartype against its jaxtyping annotations while the tests run. The hook must be installed before
# the first `import recon...`, hence here, at the top of the root conftest. RECON_TYPECHECK=0 turns it off (to
# profile, or to time the suite without it).
if os.environ.get("RECON_TYPECHECK", "1") != "0":
    from tests.typecheck import install_typecheck_hook

    install_typecheck_hook()

# Tests run as 2 xdist workers on 2 cores: one torch thread per worker avoids oversubscription, under which small
# torch ops ran 10-20x slower on our CI machine (measured by the renderer benchmarks).
torch.set_num_threads(int(os.environ.get("RECON_TEST_TORCH_THREADS", "1")))

# One shared Warp kernel cache for all test workers, so each kernel module compiles once per machine.
os.environ.setdefault("WARP_CACHE_PATH", os.path.join(os.path.expanduser("~"), ".cache", "recon-warp"))


def _cuda_available() -> bool:
    return torch.cuda.is_available()


CUDA_SKIP_REASON = "CUDA case: no CUDA GPU on this machine (run scripts/gpu_check.sh on one)"
DEVICES = ["cpu"] + (["cuda"] if _cuda_available() else [])
_DEVICE_PARAMS = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not _cuda_available(), reason=CUDA_SKIP_REASON)),
]


@pytest.fixture(params=_DEVICE_PARAMS)
def device(request) -> str:
    """Every test taking `device` runs on CPU, and on CUDA when a GPU is present; without one the CUDA case is
    collected and skipped with ``CUDA_SKIP_REASON``, so CPU runs report how many GPU cases they did not run."""
    return request.param


@pytest.fixture(params=["torch", "warp"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """One torch CPU thread for the test (restored after): tiny tensors on a shared 2-core machine run several
    times faster on one thread than on two. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_report_header(config) -> str:
    return f"recon devices under test: {DEVICES} (torch {torch.__version__})"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """One line saying how many CUDA cases were skipped and why (the CPU CI never runs them)."""
    skipped = terminalreporter.stats.get("skipped", [])
    cuda = sum(1 for report in skipped if CUDA_SKIP_REASON in str(getattr(report, "longrepr", "")))
    if cuda:
        terminalreporter.write_line(f"recon: {cuda} CUDA cases skipped: {CUDA_SKIP_REASON}")
