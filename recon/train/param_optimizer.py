"""Adam over a scene's parameter groups, and the ONLY place where parameter rows and their moments change.

Densification strategies add, remove and reset primitives (rows). Each edit must touch the parameter and its
Adam moments together or the optimiser state drifts out of alignment; keeping every such edit in this class makes
that a single, tested code path (STYLE.md §7).
"""

import warnings
from collections.abc import Collection

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from recon.scenes.base import ParamGroup
from recon.train.schedules import lr_at

ADAM_EPS = 1e-15  # spec §10: the triangle-splatting reference uses eps = 1e-15 for every group
ADAM_BETAS = (0.9, 0.999)
MOMENT_KEYS = ("exp_avg", "exp_avg_sq")
FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused Adam kernel
FUSED_MIN_NUMEL = 1 << 19  # groups this large (the hash tables) use it


class ParamOptimizer:
    """``torch.optim.Adam`` with one group per parameter, schedules, and row surgery.

    Args:
        groups: the scene's parameter groups (one parameter each, unique names).
        eps: Adam epsilon.
        betas: Adam betas.
    """

    def __init__(self, groups: list[ParamGroup], *, eps: float = ADAM_EPS, betas=ADAM_BETAS) -> None:
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter group names must be unique, got {names}")
        self.groups = {g.name: g for g in groups}
        # The fused kernel makes one pass over each parameter and its moments instead of one per arithmetic op:
        # 7-8x faster on CPU for the hash grids' tables (benchmarks/bench_optimizer.py). Smaller groups keep the
        # per-op kernel: with the fused one a resumed triangles run's moments differed from the continuous run's
        # in the last bit (tests/train/test_appearance.py; their gradients are views into the rasteriser's packed
        # buffer), and for them the per-op kernel costs little.
        fusable = all(g.param.is_floating_point() and g.param.device.type in FUSED_DEVICES for g in groups)
        self.fused_groups = {g.name for g in groups if fusable and g.param.numel() >= FUSED_MIN_NUMEL}
        self.adam = torch.optim.Adam(
            [
                {"params": [g.param], "lr": g.lr, "name": g.name, "fused": g.name in self.fused_groups}
                for g in groups
            ],
            eps=eps,
            betas=betas,
        )

    # --- stepping -----------------------------------------------------------------------------------------
    def set_learning_rates(self, step: int, max_steps: int, *, progress: float | None = None) -> None:
        """Apply every group's schedule for ``step`` of ``max_steps`` (or ``progress`` in [0, 1] when given)."""
        for pg in self.adam.param_groups:
            g = self.groups[pg["name"]]
            pg["lr"] = lr_at(g.lr, g.schedule, step, max_steps, progress=progress)

    def learning_rates(self) -> dict[str, float]:
        return {pg["name"]: float(pg["lr"]) for pg in self.adam.param_groups}

    def step(self) -> None:
        """One Adam step; rows given to ``hold_rows`` keep their values and moments through it."""
        held, self._held = getattr(self, "_held", {}), {}
        saved = []
        for name, rows in held.items():
            p = self.groups[name].param
            state = self.adam.state.get(p)
            moments = {key: state[key][rows].clone() for key in MOMENT_KEYS} if state else {}
            saved.append((p, rows, p.data[rows].clone(), moments))
        self.adam.step()
        with torch.no_grad():
            for p, rows, values, moments in saved:
                p.data[rows] = values
                for key, value in moments.items():
                    self.adam.state[p][key][rows] = value

    def hold_rows(self, rows: dict[str, Bool[Tensor, " N"]]) -> None:
        """Rows of per-row groups that the next ``step`` leaves unchanged, parameters and Adam moments (then
        cleared): rows a step did not render have a zero gradient, but Adam's first moment would still move them.

        Args:
            rows: group name -> (N,) bool mask over that group's rows.
        """
        for name, mask in rows.items():
            g = self.groups.get(name)
            if g is None or not g.per_row:
                raise ValueError(f"hold_rows: {name!r} is not a per-row group")
            if mask.dtype != torch.bool or mask.shape != (g.param.shape[0],):
                raise ValueError(f"hold_rows[{name}]: a bool mask of shape ({g.param.shape[0]},) expected")
        self._held = dict(rows)

    def zero_grad(self) -> None:
        self.adam.zero_grad(set_to_none=True)

    # --- row surgery ----------------------------------------------------------------------------------------
    def _row_groups(self, names: Collection[str] | None = None) -> list[ParamGroup]:
        """The per-row groups, or the groups ``names`` (one row space of a scene with several; each must be a
        per-row group)."""
        if names is None:
            return [g for g in self.groups.values() if g.per_row]
        if isinstance(names, str):
            raise TypeError(f"names must be a collection of group names, got the string {names!r}")
        names = list(names)
        bad = [n for n in names if n not in self.groups or not self.groups[n].per_row]
        if bad or not names:
            rows = sorted(g.name for g in self.groups.values() if g.per_row)
            raise ValueError(f"names must be a non-empty list of per-row groups {rows}, got {names}")
        counts = {self.groups[n].param.shape[0] for n in names}
        if len(counts) > 1:
            raise ValueError(f"names {names}: the groups have different row counts {sorted(counts)}")
        return [self.groups[n] for n in names]

    def num_rows(self, *, names: Collection[str] | None = None) -> int:
        """The common row count of the per-row groups (of ``names`` when given)."""
        rows = {g.param.shape[0] for g in self._row_groups(names)}
        if len(rows) > 1:
            raise AssertionError(f"row parameters disagree on the row count: {rows}")
        return rows.pop() if rows else 0

    @torch.no_grad()
    def select_rows(
        self, index: Bool[Tensor, " N"] | Int[Tensor, " M"], *, names: Collection[str] | None = None
    ) -> None:
        """Keep (and reorder or repeat) rows of every per-row parameter and of its Adam moments.

        Args:
            index: (N,) boolean mask or (M,) integer row indices into the current rows.
            names: only these per-row groups (one row space, e.g. a scene's corners while its voxels keep their
                rows); default: every per-row group.
        """
        for g in self._row_groups(names):
            self._index_param(g.param, index)

    @torch.no_grad()
    def extend_rows(self, new_rows: dict[str, Tensor], *, names: Collection[str] | None = None) -> None:
        """Append rows to every per-row parameter; the Adam moments of new rows are zero.

        Args:
            new_rows: one tensor per per-row group name (of ``names`` when given), each (M, *row_shape) with the
                same M.
            names: only these per-row groups (one row space); default: every per-row group.
        """
        groups = self._row_groups(names)
        expected = {g.name for g in groups}
        if set(new_rows) != expected:
            raise ValueError(
                f"extend_rows needs exactly the groups {sorted(expected)}, got {sorted(new_rows)}"
            )
        counts = {v.shape[0] for v in new_rows.values()}
        if len(counts) != 1:
            raise ValueError(f"extend_rows: new row counts differ across groups: {counts}")
        for g in groups:
            p = g.param
            extra = new_rows[g.name].to(device=p.device, dtype=p.dtype)
            if extra.shape[1:] != p.shape[1:]:
                raise ValueError(f"extend_rows[{g.name}]: rows of shape {tuple(p.shape[1:])} expected")
            state = self.adam.state.get(p)
            p.data = torch.cat([p.data, extra]).contiguous()
            p.grad = None
            if state:
                for key in MOMENT_KEYS:
                    state[key] = torch.cat([state[key], torch.zeros_like(extra)]).contiguous()

    @torch.no_grad()
    def gather_group(self, name: str, index: Int[Tensor, " M"]) -> dict[str, Tensor]:
        """Replace one group's parameter by ``param[index]`` and its Adam moments likewise (any group: a hash
        table grown during training, ``recon.train.table_growth``).

        Args:
            name: the group.
            index: (M,) int64 rows of the current parameter.

        Returns:
            the group's state before: ``"param"`` and the moments that exist (clones), for :meth:`fold_group`.
        """
        p = self.groups[name].param
        state = self.adam.state.get(p) or {}
        before = {"param": p.data.clone()} | {key: state[key].clone() for key in MOMENT_KEYS if key in state}
        self._index_param(p, index.to(p.device))
        return before

    def _index_param(self, p: Tensor, index: Tensor) -> None:
        """``p`` and its Adam moments (where they exist) replaced by their rows ``index``; the gradient dropped."""
        state = self.adam.state.get(p)
        p.data = p.data[index].contiguous()
        p.grad = None
        if state:
            for key in MOMENT_KEYS:
                state[key] = state[key][index].contiguous()

    @torch.no_grad()
    def fold_group(self, name: str, index: Int[Tensor, " M"], before: dict[str, Tensor]) -> None:
        """Undo :meth:`gather_group` keeping what was learnt since: row ``j`` of the restored parameter (and of each
        moment) is the mean of the current rows ``k`` with ``index[k] = j``; rows that no ``k`` maps to keep their
        values in ``before``. ``fold_group(gather_group(index))`` right away restores the group up to rounding (a
        mean of ``n`` equal copies).

        Args:
            name: the group.
            index: the (M,) rows given to ``gather_group``.
            before: what ``gather_group`` returned.
        """
        p = self.groups[name].param
        if index.shape != (p.shape[0],):
            raise ValueError(
                f"fold_group[{name}]: index of shape ({p.shape[0]},) expected, got {tuple(index.shape)}"
            )
        index = index.to(p.device)
        state = self.adam.state.get(p) or {}

        def fold(current: Tensor, old: Tensor) -> Tensor:
            with warnings.catch_warnings():  # "index_reduce() is in beta": its "mean" is what is meant here
                warnings.simplefilter("ignore", UserWarning)
                return (
                    old.to(current.device)
                    .clone()
                    .index_reduce_(0, index, current, "mean", include_self=False)
                )

        p.data = fold(p.data, before["param"]).contiguous()
        p.grad = None
        for key in MOMENT_KEYS:
            if key in state:
                # a moment that did not exist before the gather (no step yet) folds into zeros
                state[key] = fold(state[key], before.get(key, torch.zeros_like(p.data))).contiguous()

    @torch.no_grad()
    def reset_moments(self, rows: Bool[Tensor, " N"] | Int[Tensor, " M"] | None = None, names=None) -> None:
        """Zero the Adam moments of ``rows`` (all rows if None) of the named groups (all per-row groups)."""
        for g in self._row_groups():
            if names is not None and g.name not in names:
                continue
            state = self.adam.state.get(g.param)
            if not state:
                continue
            for key in MOMENT_KEYS:
                if rows is None:
                    state[key].zero_()
                else:
                    state[key][rows] = 0.0

    @torch.no_grad()
    def set_rows(self, name: str, rows: Bool[Tensor, " N"] | Int[Tensor, " M"], values: Tensor) -> None:
        """Overwrite parameter values of some rows of one group and zero their moments."""
        g = self.groups[name]
        g.param.data[rows] = values.to(g.param.dtype)
        self.reset_moments(rows, names={name})

    # --- state (no pickle: flat tensors) -------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """Adam state as flat named tensors: ``<group>.exp_avg``, ``<group>.exp_avg_sq``, ``<group>.step``."""
        out: dict[str, Tensor] = {}
        for g in self.groups.values():
            state = self.adam.state.get(g.param)
            if not state:
                continue
            for key in (*MOMENT_KEYS, "step"):
                out[f"{g.name}.{key}"] = torch.as_tensor(state[key]).detach().clone()
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``state_tensors`` returned (the parameters must already have the stored shapes)."""
        for g in self.groups.values():
            if f"{g.name}.exp_avg" not in tensors:
                self.adam.state.pop(g.param, None)
                continue
            p = g.param
            state = {
                key: tensors[f"{g.name}.{key}"].to(device=p.device, dtype=p.dtype) for key in MOMENT_KEYS
            }
            for key in MOMENT_KEYS:
                if state[key].shape != p.shape:
                    raise ValueError(
                        f"optimizer state {g.name}.{key} has shape {tuple(state[key].shape)}, "
                        f"parameter has {tuple(p.shape)}"
                    )
            step = tensors[f"{g.name}.step"].to(torch.float32).reshape(())
            # the fused kernel reads the step count on the parameter's device, the per-op one on the CPU
            state["step"] = step.to(p.device) if g.name in self.fused_groups else step
            self.adam.state[p] = state
