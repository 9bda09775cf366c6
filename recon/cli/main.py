"""Entry point of the ``recon`` console script: ``recon <command> [args]``.

Each command lives in its own module ``recon.cli.<command>`` exposing ``main(argv: list[str]) -> int`` (argv
without the program and command names; the module parses it, with tyro, using ``prog="recon <command>"``).
Modules are imported lazily, so ``recon --help`` and one command never pay for the others' imports.

Errors: a :class:`recon.core.errors.ReconError` prints ``recon <command>: error: <message>`` on stderr and exits
with its ``exit_code`` (1, or 2 for :class:`~recon.core.errors.NotAvailableYet`); Ctrl-C exits 130; any other
exception prints a one-line summary and exits 1. ``--debug`` anywhere before a ``--`` adds the traceback (and
sets the ``recon`` loggers to DEBUG).
"""

import difflib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

__all__ = ["COMMANDS", "entrypoint", "main"]

PACKAGE = "recon.cli"
"""Package holding one module per command (a module attribute so tests can point it elsewhere)."""

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (one-line help, what has to land before the command works)
    "train": (
        "train a scene representation (nerf | neus | triangles | superquadrics | sparseflex) on a dataset",
        "training lands with the scene representations and the trainer (recon.train)",
    ),
    "eval": (
        "render a run's test split, write eval.json (PSNR, SSIM, LPIPS, geometry) and print it",
        "evaluation lands with the trainer",
    ),
    "render": (
        "render a trained run along a trajectory (orbit, dataset cameras, or a JSON path) to video or images",
        "rendering of trained runs lands with the trainer",
    ),
    "export": (
        "export a trained run as a mesh (ply | obj | glb) in the original or normalised frame",
        "mesh export lands with recon.export",
    ),
    "view": (
        "serve the browser viewer for a run directory or a mesh file (binds 127.0.0.1)",
        "the browser viewer lands with recon.viewer",
    ),
    "bench": (
        "train every method on one dataset with one budget, evaluate with one protocol: report.json + report.html",
        "the bench lands with recon.bench",
    ),
    "demo": (
        "quick start: synthesise a scene, train a small model, evaluate, export, and say how to view it",
        "the quick start lands once train, eval and export exist",
    ),
    "doctor": (
        "report versions, devices, which kernel backends compile, and optional components",
        "the doctor lands with the CLI",
    ),
    "data": (
        "dataset tools: 'data info PATH' (what a run would load), 'data synth NAME --output PATH'",
        "dataset tools land with recon.datasets",
    ),
}


def _version() -> str:
    import recon

    return recon.__version__


def format_help() -> str:
    """The top-level help text: usage and one line per command."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: recon [--debug] [--version] <command> [args]",
        "",
        "Reconstruct 3D scenes from posed photographs.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += [
        "",
        "options:",
        "  -h, --help  show this help (or 'recon <command> --help' for a command's options)",
        "  --version   print the recon version",
        "  --debug     show full tracebacks on errors",
    ]
    return "\n".join(lines) + "\n"


def _split_debug(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """Remove every ``--debug`` before a ``--`` separator; report whether there was one."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    head = [a for a in args[:end] if a != "--debug"]
    return debug, head + args[end:]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced, e.g. by test capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("recon")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def _load_command(name: str):
    """Import ``<PACKAGE>.<name>``; None when that very module does not exist (yet)."""
    module_name = f"{PACKAGE}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise  # a dependency of an existing command is missing: a real error, reported as such


def _run(name: str, args: list[str]) -> int:
    module = _load_command(name)
    if module is None:
        print(f"recon {name}: not available yet: {COMMANDS[name][1]}", file=sys.stderr)
        return EXIT_USAGE
    command_main = getattr(module, "main", None)
    if not callable(command_main):
        raise RuntimeError(f"module {module.__name__} has no main(argv) function")
    code = command_main(args)
    if code is not None and not isinstance(code, int):
        raise RuntimeError(f"{module.__name__}.main returned {code!r}, expected an exit code (int or None)")
    return 0 if code is None else code


def _system_exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``recon`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    debug, args = _split_debug(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(format_help())
        return 0
    if args[0] == "--version":
        print(f"recon {_version()}")
        return 0
    if args[0] == "help":
        if len(args) == 1:
            sys.stdout.write(format_help())
            return 0
        args = [args[1], "--help"]
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(
            f"recon: unknown command {name!r}{hint}; expected one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if debug:
        os.environ["RECON_DEBUG"] = "1"
    _configure_logging(debug)
    try:
        return _run(name, rest)
    except SystemExit as exc:  # tyro/argparse: --help (0) or a usage error (2), already printed
        return _system_exit_code(exc)
    except BrokenPipeError:
        # The reader of our stdout went away (`recon data info X --json | head`): stop quietly; point stdout at
        # devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"recon {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from recon.core.errors import ReconError

        if debug:
            traceback.print_exc()
        if isinstance(exc, ReconError):
            print(f"recon {name}: error: {exc}", file=sys.stderr)
            return int(getattr(exc, "exit_code", 1))
        print(f"recon {name}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not debug:
            print("re-run with --debug for the traceback", file=sys.stderr)
        return 1


def entrypoint() -> None:
    """Console-script target (``recon = "recon.cli.main:entrypoint"``)."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
