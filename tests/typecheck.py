"""The runtime shape/type-check hook the test suite installs (tests/conftest.py; docs/reliability.md).

jaxtyping's import hook rewrites every module of ``recon`` as it is imported, decorating each function and class
with ``@jaxtyped(typechecker=beartype)``: arguments and return values are checked against their annotations, and
the jaxtyping dimension names (``"N 3"``) must agree across all arguments of one call. Production code is never
rewritten; only test processes install the hook.

What is not checked, and why (keep these lists short; every entry has a reason):

- Warp kernel modules (``*warp_kernels``, ``recon.cli._doctor_kernels``): their ``@wp.kernel`` functions are
  compiled by Warp from source, their annotations (``wp.array(dtype=wp.vec3)``) are Warp types, not Python types,
  and a wrapper around a kernel would hide it from ``wp.launch``.
- Functions decorated with ``@typing.no_type_check`` (jaxtyping honours it): hot inner helpers whose checks would
  dominate the test time. None is needed at present; add one only with a measured reason in a comment.
- The ``__init__`` modules of the package-dir mapped packages (``recon.renderers``, ``recon.datasets``,
  ``recon.viewer``): the editable install loads them through its own finder, which the hook does not wrap. They
  only re-export names; the modules they import are checked.
- Code run in subprocesses (CLI end-to-end tests, the two-process distributed tests): the hook lives in the
  pytest process.
"""

import contextlib
import re
from collections.abc import Callable, Iterator

import jaxtyping
import pytest

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]

PACKAGE = "recon"
# PEP 484 numeric tower: an int is accepted where a float is annotated (as pyright and PEP 484 do).
TYPECHECKER = "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
# Module names (exact) and name suffixes that the hook leaves alone; see the module docstring.
EXCLUDED_MODULES = frozenset({"recon.cli._doctor_kernels"})
EXCLUDED_SUFFIXES = ("warp_kernels",)


def should_check(module_name: str) -> bool:
    """True when the import hook instruments ``module_name``."""
    if module_name != PACKAGE and not module_name.startswith(PACKAGE + "."):
        return False
    if module_name in EXCLUDED_MODULES:
        return False
    return not module_name.rsplit(".", 1)[-1].endswith(EXCLUDED_SUFFIXES)


def install_typecheck_hook() -> None:
    """Installs the hook for ``recon`` (call before the first ``import recon``)."""
    manager = jaxtyping.install_import_hook([PACKAGE], TYPECHECKER)
    # jaxtyping selects modules by name prefix only; narrow it with our exclusions.
    manager.hook.should_instrument = should_check


@contextlib.contextmanager
def typecheck_disabled() -> Iterator[None]:
    """Run the block without the runtime checks (as production runs), e.g. to reach our own validation."""
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)


def assert_rejected(
    call: Callable[[], object], *, match: str, argument: str | None = None, error: ExceptionTypes = ValueError
) -> None:
    """``call()`` fails clearly both ways, for the shape/type-validation tests of api boundaries:

    - with the runtime checks on (as in this suite), by our ``error`` matching ``match``, or by the checker's
      ``TypeCheckError`` when it comes first, which must name the parameter ``argument`` (default: the first
      word of ``match``, as in "faces must have shape (F, 3)");
    - with them off (as in production), by our ``error`` matching ``match``.
    """
    with pytest.raises((error, jaxtyping.TypeCheckError)) as caught:
        call()
    if isinstance(caught.value, jaxtyping.TypeCheckError):
        name = argument or re.match(r"\w+", match).group()
        assert f"parameter '{name}'" in str(caught.value), str(caught.value)
    else:
        caught.match(match)
    with typecheck_disabled(), pytest.raises(error, match=match):
        call()
