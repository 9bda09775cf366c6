"""Data-parallel training on ``torch.distributed`` (docs/distributed.md).

One process per device ("rank"); torchrun (or ``recon train --nproc N``, which runs torchrun) starts them and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_from_env` joins the
process group (NCCL on CUDA, gloo on CPU). Every rank holds the whole scene; a step renders the rank's share of the
step's views or rays, :func:`allreduce_gradients` averages the gradients (so every rank applies the same Adam step
and the parameters stay identical), and strategies reduce their statistics with :func:`all_reduce_` before they
change rows. Rank 0 alone writes checkpoints, metrics and evaluations (:func:`is_rank0`).

Without ``WORLD_SIZE > 1`` every helper is a cheap no-op, so single-process code calls them unconditionally.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from recon.core import ReconError

__all__ = [
    "BUCKET_BYTES",
    "all_reduce_",
    "allreduce_gradients",
    "broadcast_object",
    "broadcast_tensors_",
    "check_same",
    "init_from_env",
    "is_distributed",
    "is_rank0",
    "launch_local",
    "mean_floats",
    "pop_nproc",
    "rank",
    "shard",
    "shutdown",
    "world_size",
]

logger = logging.getLogger(__name__)

BUCKET_BYTES = 25 * 1024 * 1024
"""Gradient bucket size (torch DDP's default): one all-reduce per bucket, launched asynchronously."""
TIMEOUT_MINUTES = 10.0
"""Collective timeout: a rank that stops answering (crashed, hung) fails the job after this long."""

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def is_distributed() -> bool:
    """Whether this process is one rank of an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_rank0() -> bool:
    """Whether this process writes checkpoints, metrics and evaluations."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's environment variables; return this rank's device.

    Does nothing (returns ``device``) unless ``WORLD_SIZE > 1``. CUDA uses NCCL and the device
    ``cuda:LOCAL_RANK``; CPU uses gloo.

    Raises:
        ReconError: ``WORLD_SIZE > 1`` without ``RANK``/``MASTER_ADDR``/``MASTER_PORT`` (not started by torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_distributed():
        return device
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ReconError(
            f"WORLD_SIZE={world} but {', '.join(missing)} unset: start data-parallel training with torchrun or "
            f"'recon train METHOD --nproc N' (docs/distributed.md)"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=TIMEOUT_MINUTES))
    logger.info("rank %d of %d joined the %s process group on %s", rank(), world, backend, device)
    return device


def shutdown() -> None:
    """Leave the process group (no-op without one): all ranks meet at a barrier first, so no rank tears down its
    connections while a peer is still inside a collective."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_worker(code: int = 0) -> NoReturn:
    """End a rank that has nothing left to write (in ``recon train``: every rank but 0) after :func:`shutdown`,
    skipping interpreter finalisation.

    gloo's C++ threads can still be winding down when the interpreter tears itself down, which aborts the process
    ("terminate called without an active exception", SIGABRT) about one run in ten on a loaded 2-core machine, and
    torchrun then fails the whole job although training finished. Such a rank has written everything it
    owns, so after flushing stdout/stderr, ``os._exit`` loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard(count: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rank ``rank_``'s part of ``count`` items split into ``world`` equal, contiguous parts.

    Raises:
        ValueError: ``count`` is not a multiple of ``world``.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if count % world != 0:
        raise ValueError(f"count: {count} items do not split evenly over {world} ranks")
    part = count // world
    return slice(rank_ * part, (rank_ + 1) * part)


def allreduce_gradients(params: list[Tensor], *, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average ``p.grad`` over the ranks, in place, for every parameter that has a gradient on some rank.

    Gradients are flattened into buckets of at most ``bucket_bytes`` per (device, dtype) and all-reduced
    asynchronously (all buckets in flight at once), then divided by the world size. A parameter with no gradient
    on this rank but one on another gets zeros first; one with no gradient anywhere keeps ``grad = None`` (Adam
    skips it, as in one process). Every rank must pass the same parameters in the same order.

    Raises:
        ReconError: the ranks' parameters differ in size (a strategy changed rows differently on some rank); the
            check rides on the collective that gathers the gradient flags, so it costs nothing extra.
    """
    world = world_size()
    if world == 1 or not params:
        return
    device = params[0].device
    total = sum(p.numel() for p in params)
    flags = [int(p.grad is not None) for p in params]
    meta = torch.tensor([*flags, total, -total], dtype=torch.int64, device=device)
    dist.all_reduce(meta, op=dist.ReduceOp.MAX)
    meta = meta.tolist()  # host sync: the flags decide which gradients travel
    _check_sizes(total, most=meta[-2], fewest=-meta[-1])
    active = [p for p, flag in zip(params, meta[:-2], strict=True) if flag]
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    pending = []
    for bucket in _buckets(active, bucket_bytes):
        flat = torch.cat([_grad(p).reshape(-1) for p in bucket])
        pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
    for bucket, flat, handle in pending:
        handle.wait()
        flat.div_(world)
        offset = 0
        for p in bucket:
            grad = _grad(p)
            n = grad.numel()
            grad.copy_(flat[offset : offset + n].view_as(grad))
            offset += n


def _check_sizes(total: int, *, most: int, fewest: int) -> None:
    """Raise :class:`ReconError` unless every rank holds ``total`` parameter values (``most`` and ``fewest``: the
    largest and smallest count over the ranks)."""
    if most != fewest:
        raise ReconError(
            f"rank {rank()}: the ranks' parameters differ in size ({total} values here, {fewest} to {most} over the "
            f"ranks): a strategy changed rows differently on some rank (every row edit must follow from values all "
            f"ranks share; docs/distributed.md)"
        )


def _grad(p: Tensor) -> Tensor:
    """``p.grad`` of an active parameter (the caller gave every active parameter a gradient)."""
    assert p.grad is not None
    return p.grad


def _buckets(params: list[Tensor], bucket_bytes: int) -> list[list[Tensor]]:
    """Parameters grouped by (device, dtype), in order, each group cut into buckets of at most ``bucket_bytes``
    (a larger parameter is a bucket of its own)."""
    groups: dict[tuple, list[list[Tensor]]] = {}
    sizes: dict[tuple, int] = {}
    for p in params:
        grad = _grad(p)
        key = (grad.device, grad.dtype)
        nbytes = grad.numel() * grad.element_size()
        if key not in groups or sizes[key] + nbytes > bucket_bytes:
            groups.setdefault(key, []).append([])
            sizes[key] = 0
        groups[key][-1].append(p)
        sizes[key] += nbytes
    return [bucket for buckets in groups.values() for bucket in buckets if bucket]


def all_reduce_(tensor: Tensor, op: str = "sum") -> Tensor:
    """Reduce ``tensor`` in place over the ranks with ``op`` ("sum", "max", "min", "mean"); returns it."""
    if world_size() == 1:
        return tensor
    if op == "mean":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.div_(world_size())
    if op not in _OPS:
        raise ValueError(f"op must be sum|max|min|mean, got {op!r}")
    dist.all_reduce(tensor, op=_OPS[op])
    return tensor


def broadcast_tensors_(tensors: list[Tensor], src: int = 0) -> None:
    """Overwrite every tensor in place with rank ``src``'s (same shapes on every rank)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order, on every rank (small objects only; ``[obj]`` alone)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (small objects only: a path, a decision)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_float(value: float, device: torch.device | str = "cpu", src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (e.g. its training clock, so budgets stop every rank together)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=src)
    return float(t)


def mean_floats(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean over the ranks of each value (same keys, in the same order, on every rank)."""
    if world_size() == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    all_reduce_(t, "mean")
    return dict(zip(values, t.tolist(), strict=True))


def check_same(value: float, what: str, device: torch.device | str = "cpu") -> None:
    """Raise :class:`ReconError` naming ``what`` unless every rank passes the same ``value``."""
    if world_size() == 1:
        return
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if float(t[0]) != -float(t[1]):
        raise ReconError(
            f"rank {rank()}: {what} differs between ranks ({value} here, from {-float(t[1])} to {float(t[0])}); "
            f"every rank must start from the same run, config and seed"
        )


# --- local launch ----------------------------------------------------------------------------------------------
def pop_nproc(argv: list[str]) -> tuple[list[str], int]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, and N (1 when absent).

    Raises:
        ReconError: N is missing or not a positive integer.
    """
    out, nproc, i = [], 1, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--nproc" or arg.startswith("--nproc="):
            text = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if "=" in arg else 2
            if not text.isdigit() or int(text) < 1:
                raise ReconError(f"--nproc must be a positive integer, got {text!r}")
            nproc = int(text)
            continue
        out.append(arg)
        i += 1
    return out, nproc


def launch_local(nproc: int, args: list[str], *, timeout: float | None = None) -> int:
    """Run ``python -m recon.cli.main ARGS`` as ``nproc`` ranks on this machine through torchrun; its exit status.

    torchrun (``--standalone``: a free local rendezvous port) sets the rank variables, forwards signals, and stops
    every rank when one fails (the error names the failed rank; the newest checkpoint stays intact).
    """
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ReconError("--nproc: already running under torchrun (WORLD_SIZE is set); drop --nproc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "recon.cli.main", *args]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default; each rank sets --threads itself
    logger.info("launching %d local ranks: %s", nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    previous = _forward_signals(proc)
    try:
        return proc.wait(timeout=timeout)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _forward_signals(proc: subprocess.Popen) -> dict:
    """While torchrun runs: SIGTERM and SIGHUP sent to this process go on to torchrun (which passes them to the
    ranks: checkpoint, then stop); SIGINT is ignored here, as Ctrl-C in a terminal reaches every process of the
    foreground group, torchrun and the ranks included, by itself. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def forward(signum, frame):
        proc.send_signal(signum)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signum = getattr(signal, name)
            previous[signum] = signal.signal(signum, forward)
    return previous
