"""``recon bench --data PATH [--methods a,b,...] [--minutes M] [--output DIR] [--resume]``: every method on the same
data with the same training budget, one evaluation protocol; writes DIR/report.json and DIR/report.html.

Each method is trained, evaluated and exported by ``recon train`` / ``recon eval`` / ``recon export`` in child
processes (one crash cannot stop the others); see docs/bench.md.
"""

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from recon.core import ReconError


@dataclass(frozen=True)
class BenchArgs:
    data: str
    """Dataset folder every method trains and is evaluated on."""
    methods: str = ""
    """Comma-separated methods (default: every method that can be trained)."""
    minutes: float = 20.0
    """Training budget of each method in minutes (recon train --max-minutes)."""
    output: str = "outputs/bench"
    """Bench folder: runs/<method>/, logs/, report.json, report.html."""
    resume: bool = False
    """Reuse finished runs in --output and continue interrupted ones (recon train --resume)."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto, passed to recon train and recon eval; a comma-separated list (cuda:0,cuda:1)
    runs the methods side by side, each on a free device."""
    eval_every_minutes: float = 0.0
    """Periodic evaluation interval for the PSNR-vs-time curve (0: a tenth of --minutes)."""
    eval_images: int = 5
    """Test views of each periodic evaluation."""
    eval_max_images: int = 0
    """recon eval --max-images (0: the whole test split, the published protocol)."""
    eval_geometry: bool = True
    """recon eval --geometry: eval.json also gets the Chamfer distance of the TSDF-fused surface."""
    steps: int = 0
    """Optional upper bound on training steps (0: the time budget alone)."""
    threads: int = 0
    """recon train --threads (0: torch's default)."""
    train_args: tuple[str, ...] = ()
    """Extra recon train flags of one method, as 'METHOD=--flag value ...' (repeatable)."""
    export_args: tuple[str, ...] = ()
    """Extra recon export flags of one method, as 'METHOD=--flag value ...' (repeatable)."""


def _methods(text: str) -> list[str]:
    from recon.train.methods import METHODS

    names = [m.strip() for m in text.split(",") if m.strip()] if text else list(METHODS)
    if not names:
        raise ReconError("--methods: expected a comma-separated list of methods, e.g. nerf,triangles")
    if len(set(names)) != len(names):
        raise ReconError(f"--methods {text!r}: a method is listed twice")
    return names


def _per_method(flag: str, items: tuple[str, ...], methods: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, flags = item.partition("=")
        if not sep or method not in methods:
            raise ReconError(
                f"{flag} {item!r}: expected 'METHOD=FLAGS' with METHOD one of {', '.join(methods)}"
            )
        out[method] = out.get(method, []) + shlex.split(flags)
    return out


def main(argv: list[str]) -> int:
    args = tyro.cli(BenchArgs, args=argv, prog="recon bench")
    from recon.bench import BenchSettings, run_bench

    data = Path(args.data).expanduser().resolve()
    if not data.is_dir():
        raise ReconError(f"--data {args.data}: not a folder")
    if args.minutes <= 0:
        raise ReconError(f"--minutes {args.minutes}: expected a positive number of minutes")
    methods = _methods(args.methods)
    from recon.bench import bench_devices

    try:
        bench_devices(args.device)
    except ValueError as exc:
        raise ReconError(str(exc)) from None
    output = Path(args.output).expanduser().resolve()
    if not args.resume and (output / "runs").is_dir() and any((output / "runs").iterdir()):
        raise ReconError(f"--output {args.output}: already holds runs (use --resume, or another folder)")
    settings = BenchSettings(
        data=data, output=output, minutes=args.minutes, device=args.device,
        eval_every_minutes=args.eval_every_minutes or args.minutes / 10, eval_images=args.eval_images,
        eval_max_images=args.eval_max_images, eval_geometry=args.eval_geometry, steps=args.steps,
        threads=args.threads,
        train_args=_per_method("--train-args", args.train_args, methods),
        export_args=_per_method("--export-args", args.export_args, methods),
    )  # fmt: skip
    report = run_bench(settings, methods, resume=args.resume, say=lambda s: print(s, file=sys.stderr))
    failed = [r["method"] for r in report["methods"] if r["status"] != "ok"]
    print(output / "report.json")
    print(output / "report.html")
    return 1 if failed and len(failed) == len(report["methods"]) else 0
