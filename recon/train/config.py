"""Training configuration: one frozen dataclass per method, sharing the generic run fields of ``TrainConfig``.

The dataclass defaults are the published recipe; ``configs/triangles.yaml`` and ``configs/triangles_cpu.yaml``
(the CPU-budget preset) hold overrides only. Every field is a CLI flag (``--scene.sh-degree 2``).
"""

import math
from dataclasses import dataclass, field
from typing import Literal

from recon.core.shapes import Backend
from recon.scenes.triangles import TriangleSceneConfig
from recon.train.appearance import AppearanceMode
from recon.train.losses import LossConfig
from recon.train.triangles_mcmc import TriangleMCMCConfig

BackgroundMode = Literal["dataset", "random", "white", "black"]
LoggerChoice = Literal["auto", "tensorboard", "none"]


@dataclass(frozen=True)
class TrainConfig:
    """Fields every method shares (CLI.md, ``recon train``)."""

    data: str = ""
    """Dataset folder in any supported format (detected automatically)."""
    method: str = ""
    """Method name (set by ``recon train METHOD``)."""
    steps: int = 30_000
    """Optimisation steps (image batches: views_per_rank training views per process and step); an upper bound
    under --max-minutes only when given explicitly: with --max-minutes and no --steps the run trains until the time
    is spent (steps = 0)."""
    run_dir: str = ""
    """Exact run directory (default: OUTPUT_DIR/EXPERIMENT/METHOD/TIMESTAMP)."""
    output_dir: str = "outputs"
    """Root folder of generated run directories."""
    experiment: str = ""
    """Experiment folder name (default: the dataset folder name)."""
    downscale: float | None = None
    """Image downscale factor relative to the size the cameras state (uses images_F folders when present); None:
    the images as stored (e.g. 8 for an LLFF folder holding only images_8/)."""
    test_every: int = 8
    """COLMAP/LLFF: every N-th image (sorted by name) is a test view (the LLFF / mip-NeRF 360 protocol)."""
    allow_outside_root: bool = False
    """Allow dataset files (images, masks, meshes) that resolve outside the dataset folder."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto (cuda when available, else cpu)."""
    seed: int = 0
    """Seed of initialisation, view order, backgrounds and strategy draws."""
    resume: bool = False
    """Continue the run in --run-dir from its newest checkpoint."""
    viewer: bool = False
    """Serve the live browser viewer while training (see docs/viewer.md)."""
    viewer_host: str = "127.0.0.1"
    """Address the live viewer binds (a warning is logged when it is not loopback)."""
    viewer_port: int = 8080
    """Port of the live viewer."""
    max_minutes: float = 0.0
    """Train for this much training time, then stop with a final checkpoint and eval (0: no time budget).
    Periodic evaluation, checkpoints and pauses are not counted. Every schedule follows the time fraction, so it
    completes with the budget; an explicit --steps stays an upper bound (recon.train.budget)."""
    backend: Backend = "auto"
    """Renderer kernel backend."""
    background: BackgroundMode = "dataset"
    """Background behind the scene: the dataset's (white for Blender), random per step, white or black."""
    log_every: int = 50
    """Steps between progress/metrics updates (the only steps that read values back from the device)."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: by time only; there is always one at the end, on --max-minutes, on Ctrl-C,
    SIGTERM and SIGHUP)."""
    checkpoint_minutes: float = 2.0
    """Training minutes between checkpoints (0: off), so a kill -9, an OOM kill or a reboot loses at most this."""
    keep_checkpoints: int = 2
    """Number of newest checkpoints kept (>= 1; the newest one that verifies is never deleted)."""
    eval_every_minutes: float = 0.0
    """Evaluate on a subset of the test split every this many training minutes (0: only at the end)."""
    eval_every: int = 0
    """Evaluate on a subset of the test split every this many steps (0: never during training)."""
    eval_images: int = 20
    """Test images used by evaluations during training (0: all); the final evaluation uses all."""
    final_eval: bool = True
    """Evaluate the whole test split at the end of training (writes eval.json)."""
    preset: str = "auto"
    """Preset applied before these flags: METHOD (the published recipe), METHOD_cpu (CPU budget) or auto
    (METHOD_cpu on CPU, METHOD otherwise)."""
    threads: int = 0
    """torch CPU threads (0: torch's default). One thread is much faster on a CPU shared with other jobs."""
    progress: bool = True
    """Show a progress bar on stderr."""
    logger: LoggerChoice = "auto"
    """Experiment logger: tensorboard (event files in RUN_DIR/tensorboard: scalars on logging steps, the first
    periodic-eval view's render and target), none, or auto (tensorboard when the package is installed)."""
    load_config: str = ""
    """A config YAML applied after the preset and before the flags: a run's full config.yaml or any subset of
    fields (loaded strictly; its run_dir and resume are not taken over)."""
    print_config: bool = False
    """Print the resolved config as YAML and exit without training (a dry run)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Generic loss terms (photometric, depth-normal consistency, distortion)."""
    batch: Literal["image", "rays"] = "image"
    """What one step trains on: one whole training view, or rays drawn across the training views (fields)."""
    rays_per_batch: int = 4096
    """Rays per step with batch "rays"."""
    images_per_batch: int = 0
    """With batch "rays": 0 draws an image per ray; C > 0 draws C images with rays_per_batch / C rays each."""
    views_per_rank: int = 1
    """With batch "image": training views each process renders per step (the loss is their mean); a step of N
    processes (--nproc N) renders N x views_per_rank views (docs/distributed.md)."""
    appearance: AppearanceMode = "off"
    """Per-image exposure compensation of the training renders (recon.train.appearance): affine, off, or auto
    (affine for photos without alpha masks, i.e. real captures). Training only: evaluation and renders use the
    average exposure of the training photos."""


@dataclass(frozen=True)
class TrianglesTrainConfig(TrainConfig):
    """``recon train triangles``: triangle splats (spec triangle_splats.md)."""

    scene: TriangleSceneConfig = field(default_factory=TriangleSceneConfig)
    strategy: TriangleMCMCConfig = field(default_factory=TriangleMCMCConfig)


RUN_CONTROL_FIELDS = frozenset({
    "data", "steps", "run_dir", "output_dir", "experiment", "device", "resume", "viewer", "viewer_host",
    "viewer_port", "max_minutes", "allow_outside_root", "backend", "log_every", "checkpoint_every", "checkpoint_minutes",
    "keep_checkpoints", "eval_every_minutes", "eval_every", "eval_images", "final_eval", "threads", "progress",
    "logger", "load_config", "print_config", "views_per_rank",
})  # fmt: skip
"""Fields ``--resume`` may change: they steer the run (budget, logging, devices), not the model or the data.
``data`` may point elsewhere as long as the dataset fingerprint matches (a moved dataset). ``views_per_rank`` is
the per-process share of a step's views, like the number of processes (which a resume may change too)."""

_POSITIVE_INTS = ("log_every", "keep_checkpoints", "rays_per_batch", "views_per_rank")
_NON_NEGATIVE_INTS = ("steps", "checkpoint_every", "eval_every", "eval_images", "threads", "images_per_batch")
_NON_NEGATIVE_FLOATS = ("max_minutes", "checkpoint_minutes", "eval_every_minutes")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_train_config(cfg: TrainConfig) -> None:
    """Reject generic run values that would fail later (or silently do nothing), before any work starts.

    Raises:
        ReconError: naming the flag and what it accepts (the first offending field).
    """
    from recon.core import ReconError

    for name in _POSITIVE_INTS:
        if getattr(cfg, name) < 1:
            raise ReconError(f"{_flag(name)} {getattr(cfg, name)}: expected a positive integer")
    for name in _NON_NEGATIVE_INTS:
        if getattr(cfg, name) < 0:
            raise ReconError(f"{_flag(name)} {getattr(cfg, name)}: expected 0 or a positive integer")
    for name in _NON_NEGATIVE_FLOATS:
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ReconError(f"{_flag(name)} {value}: expected a finite number >= 0 (0: off)")
    if cfg.steps == 0 and cfg.max_minutes == 0:
        raise ReconError(
            "--steps 0 means no step bound: give a time budget with --max-minutes M (or --steps N)"
        )
    if cfg.test_every < 2:
        raise ReconError(f"--test-every {cfg.test_every}: expected a whole number >= 2")
    if cfg.downscale is not None and not (math.isfinite(cfg.downscale) and cfg.downscale > 0):
        raise ReconError(f"--downscale {cfg.downscale}: expected a positive number")
    if not 0 <= cfg.viewer_port <= 65535:
        raise ReconError(f"--viewer-port {cfg.viewer_port}: expected a TCP port (0-65535)")
    if cfg.images_per_batch > cfg.rays_per_batch:
        raise ReconError(
            f"--images-per-batch {cfg.images_per_batch}: at most --rays-per-batch ({cfg.rays_per_batch})"
        )
    if cfg.batch == "rays" and cfg.views_per_rank != 1:
        raise ReconError(
            f"--views-per-rank {cfg.views_per_rank}: only for --batch image (ray batches: --rays-per-batch per "
            f"process)"
        )


def model_config_hash(cfg: TrainConfig) -> str:
    """sha256 of the config without its run-control fields: what a checkpoint's parameters depend on."""
    from recon.config import config_hash, dump_config

    data = {k: v for k, v in dump_config(cfg).items() if k not in RUN_CONTROL_FIELDS}
    return config_hash(data)
