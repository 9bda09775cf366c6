"""Run one method of a bench: ``recon train``, ``recon eval`` and ``recon export`` as child processes.

Each step is ``python -m recon.cli.main <command> ...`` in its own process, so a crash (or an out-of-memory kill)
of one method cannot take the bench or the other methods down. Stdout and stderr of every step go to
``DIR/logs/<method>.<step>.log``; a failed step's row keeps its exit status and the last lines of its stderr.

Peak memory is the maximum resident set size of the ``recon train`` process itself, read from the rusage record
that ``os.wait4`` returns for that one child (``ru_maxrss``, KiB on Linux): exact per child, unlike
``getrusage(RUSAGE_CHILDREN)``, which is a maximum over every child ever waited for. The child is started by a
small wrapper process (``_WRAPPER``), because Linux counts the RSS of the process a child was forked from into the
child's peak. It is host memory; GPU memory is not included.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BenchSettings", "MethodRun", "StepResult", "eval_has_mesh_flag", "run_method"]

EXPORT_NAME = "bench-native.glb"
"""File name of the native mesh export inside the run's exports/ folder."""
TAIL_LINES = 15


@dataclass(frozen=True)
class BenchSettings:
    """What every method of one bench shares.

    Attributes:
        data: dataset folder (absolute).
        output: bench folder (absolute); runs go to ``output/runs/<method>``.
        minutes: training budget per method (``recon train --max-minutes``).
        device: ``--device`` passed to train and eval (export runs on cpu unless this is a cuda device).
        eval_every_minutes: periodic evaluation interval (the PSNR-vs-time curve).
        eval_images: test views of each periodic evaluation.
        eval_max_images: ``recon eval --max-images`` (0: the whole test split).
        eval_geometry: ``recon eval --geometry`` (Chamfer of the TSDF-fused surface in eval.json) or not.
        steps: optional upper bound on steps (0: the time budget alone).
        threads: ``recon train --threads`` (0: torch's default).
        train_args: extra ``recon train`` flags per method name.
        export_args: extra ``recon export`` flags per method name.
        timeout_s: wall-clock limit of one child process.
    """

    data: Path
    output: Path
    minutes: float
    device: str = "auto"
    eval_every_minutes: float = 0.0
    eval_images: int = 5
    eval_max_images: int = 0
    eval_geometry: bool = True
    steps: int = 0
    threads: int = 0
    train_args: dict[str, list[str]] = field(default_factory=dict)
    export_args: dict[str, list[str]] = field(default_factory=dict)
    timeout_s: float = 0.0

    def run_dir(self, method: str) -> Path:
        return self.output / "runs" / method

    def log_path(self, method: str, step: str) -> Path:
        return self.output / "logs" / f"{method}.{step}.log"

    def child_timeout(self) -> float:
        """A hung child is killed after this many seconds (default: 3x the budget + 15 minutes of slack)."""
        return self.timeout_s if self.timeout_s > 0 else 3 * self.minutes * 60 + 900


@dataclass
class StepResult:
    """One child process: its command, exit status, wall time, max RSS and the tail of its output."""

    name: str
    argv: list[str]
    returncode: int
    seconds: float
    max_rss_bytes: int | None
    stderr_tail: str = ""
    cpu_seconds: float | None = None
    """User + system CPU time of the child (os.wait4); under load it is what the child really got, unlike wall time."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def to_json(self) -> dict:
        return {
            "command": shlex.join(self.argv),
            "exit_status": self.returncode,
            "seconds": round(self.seconds, 3),
            "max_rss_bytes": self.max_rss_bytes,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "stderr_tail": self.stderr_tail,
        }


@dataclass
class MethodRun:
    """What running (or reusing) one method produced."""

    method: str
    run_dir: Path
    steps: list[StepResult] = field(default_factory=list)
    reused: bool = False
    eval_mesh_flag: bool = False

    @property
    def failed(self) -> StepResult | None:
        """The first step that failed, or None."""
        return next((s for s in self.steps if not s.ok), None)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def status(self) -> str:
        """ok: every step succeeded; partial: trained and evaluated, but the export failed; failed: otherwise."""
        if self.reused or (self.failed is None and len(self.steps) == 3):
            return "ok"
        train, ev = self.step("train"), self.step("eval")
        if train is not None and train.ok and ev is not None and ev.ok:
            return "partial"
        return "failed"

    @property
    def export_path(self) -> Path:
        return self.run_dir / "exports" / EXPORT_NAME


def _recon(*args: str) -> list[str]:
    return [sys.executable, "-m", "recon.cli.main", *args]


# The child runs under this small wrapper (python -I -c): on Linux a process inherits the peak RSS of the
# process it was forked from (the bench, with torch loaded), so the child is forked from the small wrapper
# instead, and the wrapper writes what os.wait4 says of it (its own rusage) to the file named by argv[1].
_WRAPPER = """
import json, os, signal, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *a: proc.kill())
_, status, usage = os.wait4(proc.pid, 0)
scale = 1 if sys.platform == "darwin" else 1024
with open(sys.argv[1], "w") as f:
    json.dump({"max_rss_bytes": int(usage.ru_maxrss) * scale, "cpu_seconds": usage.ru_utime + usage.ru_stime}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(name: str, argv: list[str], log: Path, timeout_s: float) -> StepResult:
    """Run ``argv`` with stdout+stderr in ``log``; its exit status, wall time and peak RSS (see ``_WRAPPER``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_suffix(".rss.json")
    rss_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("RECON_DEBUG", None)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-I", "-c", _WRAPPER, str(rss_file), *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and the command (one session)
            proc.wait()
            code = None
    seconds = time.perf_counter() - start
    usage = json.loads(rss_file.read_text()) if rss_file.is_file() else {}
    rss, cpu = usage.get("max_rss_bytes"), usage.get("cpu_seconds")
    rss_file.unlink(missing_ok=True)
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    tail = "\n".join(lines[-TAIL_LINES:])
    if code is None:
        tail += f"\n(killed after {timeout_s:.0f} s: the bench's per-process time limit)"
    result = StepResult(name, argv, 124 if code is None else code, seconds, rss, tail, cpu)
    log.with_suffix(".json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return result


def eval_has_mesh_flag() -> bool:
    """Whether this checkout's ``recon eval`` has a ``--mesh`` flag (mesh-based evaluation)."""
    try:
        done = subprocess.run(_recon("eval", "--help"), capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):  # cannot tell: mesh metrics are then reported unavailable
        return False
    return "--mesh" in done.stdout


def _train_argv(method: str, s: BenchSettings, resume: bool) -> list[str]:
    run_dir = str(s.run_dir(method))
    if resume:  # the run keeps its own config; only run-control flags may be given again
        return _recon("train", method, "--resume", "--run-dir", run_dir, "--no-progress")
    argv = _recon(
        "train", method, "--data", str(s.data), "--max-minutes", str(s.minutes), "--run-dir", run_dir,
        "--device", s.device, "--no-final-eval", "--no-progress", "--eval-images", str(s.eval_images),
    )  # fmt: skip
    if s.eval_every_minutes > 0:
        argv += ["--eval-every-minutes", str(s.eval_every_minutes)]
    if s.steps > 0:
        argv += ["--steps", str(s.steps)]
    if s.threads > 0:
        argv += ["--threads", str(s.threads)]
    return argv + list(s.train_args.get(method, []))


def is_finished(method: str, s: BenchSettings) -> bool:
    """A method whose run has eval.json and the bench export: reused as is by ``--resume``."""
    run_dir = s.run_dir(method)
    return (run_dir / "eval.json").is_file() and (run_dir / "exports" / EXPORT_NAME).is_file()


def _load_steps(method: str, s: BenchSettings) -> list[StepResult]:
    """The step records an earlier bench wrote for ``method`` (logs/<method>.<step>.json)."""
    steps = []
    for name in ("train", "eval", "export"):
        path = s.log_path(method, name).with_suffix(".json")
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            steps.append(StepResult(name, shlex.split(data["command"]), data["exit_status"], data["seconds"],
                                    data["max_rss_bytes"], data["stderr_tail"], data.get("cpu_seconds")))  # fmt: skip
    return steps


def run_method(method: str, s: BenchSettings, *, resume: bool, mesh_flag: bool) -> MethodRun:
    """Train (or continue) ``method``; when that succeeds, evaluate it and export its native mesh."""
    result = MethodRun(method, s.run_dir(method), eval_mesh_flag=mesh_flag)
    if resume and is_finished(method, s):
        result.reused = True
        result.steps = _load_steps(method, s)
        return result
    continue_run = resume and (s.run_dir(method) / "config.yaml").is_file()
    export_device = s.device if s.device.startswith("cuda") else "cpu"
    eval_argv = _recon("eval", str(result.run_dir), "--save-renders", "--device", s.device,
                       "--max-images", str(s.eval_max_images),
                       "--geometry" if s.eval_geometry else "--no-geometry")  # fmt: skip
    if mesh_flag:
        eval_argv.append("--mesh")
    export_argv = _recon("export", str(result.run_dir), "--format", "glb", "--mesh", "native", "--frame", "original",
                         "--objects-only", "--force", "--device", export_device, "--output", str(result.export_path),
                         *s.export_args.get(method, []))  # fmt: skip
    for name, argv in (
        ("train", _train_argv(method, s, continue_run)),
        ("eval", eval_argv),
        ("export", export_argv),
    ):
        step = run_child(name, argv, s.log_path(method, name), s.child_timeout())
        result.steps.append(step)
        if name == "train" and not step.ok:
            break  # nothing to evaluate or export; eval and export are independent of each other
    return result
