"""Method registry: the one table mapping a method name to the module that defines it.

Each representation defines its ``Method`` record (config, scene, strategy classes, native writer) in its own
module ``recon.train.methods.<name>`` as ``METHOD``; this table holds one line per method: the module and the
one-line summary shown by ``recon train --help``. Modules are imported on first use, so ``recon train triangles``
never imports the field methods. The trainer and the CLI look methods up here and never branch on a concrete scene
type. Adding a method: docs/adding-a-method.md.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recon.core.errors import NotAvailableYet, ReconError
from recon.scenes.base import ExportOptions, Scene
from recon.train.capacity import CapacityRule
from recon.train.config import TrainConfig
from recon.train.footprint import FootprintRule
from recon.train.strategy import Strategy
from recon.train.table_growth import TableRule

__all__ = ["METHODS", "NOT_YET", "REGISTRY", "Method", "get_method", "method_summaries"]


@dataclass(frozen=True)
class Method:
    """A trainable representation.

    Attributes:
        name: CLI name.
        config_cls: its TrainConfig subclass (with ``scene``, ``strategy`` and ``loss`` fields).
        scene_config_cls: the scene's config dataclass.
        strategy_config_cls: the strategy's config dataclass.
        scene_cls: the Scene class (``from_dataset`` / ``empty`` constructors).
        make_strategy: builds the strategy from the run config and the number of training views.
        write_native: ``write_native(scene, folder, options)`` writes the representation's own files (every
            attribute) into the existing folder ``folder`` and returns the main one (``recon export --format
            native``; ``options``: the ``ExportOptions`` of the flags that apply, e.g. ``--objects-only``); None
            when the method has none.
        capacity: the rules that pick its capacity limits from a time budget (``recon.train.capacity``).
        footprint: the rules that set grid resolutions from the training views' pixel footprint under a time
            budget (``recon.train.footprint``).
        tables: hash tables that start small under a time budget and grow during the run when the budget buys
            it (``recon.train.table_growth``; with the in-run rays rule only).
        adapt_to_dataset: resolves the config's dataset-dependent (``auto``) settings from the loaded dataset
            before training, returning the config and a one-line note of what it chose; idempotent (a resumed
            run's resolved config passes unchanged); None: nothing depends on the dataset.
        init_scene: builds the initial scene from the run config, the dataset and the generator when the method
            has options beyond ``scene_cls.from_dataset(cfg.scene, dataset, generator=...)`` (the default when
            None), e.g. sparseflex's ``--init-from RUN_DIR``.
    """

    name: str
    config_cls: type[TrainConfig]
    scene_config_cls: type
    strategy_config_cls: type
    scene_cls: type[Scene]
    make_strategy: Callable[[TrainConfig, int], Strategy]
    write_native: Callable[[Scene, Path, ExportOptions], Path] | None = None
    capacity: tuple[CapacityRule, ...] = ()
    footprint: tuple[FootprintRule, ...] = ()
    tables: tuple[TableRule, ...] = ()
    adapt_to_dataset: Callable[[TrainConfig, Any], tuple[TrainConfig, str]] | None = None
    init_scene: Callable[[TrainConfig, Any, torch.Generator], Scene] | None = None


REGISTRY: dict[str, tuple[str | None, str]] = {
    # name: (module defining METHOD, or None while the method has not landed; one-line summary)
    "nerf": ("recon.train.methods.nerf", "Instant-NGP radiance field, occupancy-grid ray marching (volume renderer)"),
    "neus": ("recon.train.methods.neus", "NeuS signed-distance field: watertight surfaces (volume renderer)"),
    "triangles": ("recon.train.methods.triangles", "triangle splats: a soup of smooth-edged triangles (splat rasterizer)"),
    "superquadrics": ("recon.train.methods.superquadrics", "superquadric blocks (Differentiable Blocks World; mesh rasterizer)"),
    "sparseflex": ("recon.train.methods.sparseflex", "sparse-voxel FlexiCubes surfaces fitted to masked images (mesh rasterizer)"),
}  # fmt: skip

METHODS: tuple[str, ...] = tuple(name for name, (module, _) in REGISTRY.items() if module is not None)
"""Names of the methods that can be trained."""
NOT_YET: tuple[str, ...] = tuple(name for name, (module, _) in REGISTRY.items() if module is None)
"""Names of planned methods whose issues have not landed."""


def get_method(name: str) -> Method:
    """The registered method ``name`` (its module is imported on first use).

    Raises:
        NotAvailableYet: a planned method whose issue has not landed.
        ReconError: an unknown method name.
    """
    if name not in REGISTRY:
        raise ReconError(f"METHOD {name!r} is unknown; expected one of: {', '.join(REGISTRY)}")
    module, summary = REGISTRY[name]
    if module is None:
        raise NotAvailableYet(f"method {name!r} is not available yet: {summary}")
    method = importlib.import_module(module).METHOD
    if not isinstance(method, Method) or method.name != name:
        raise TypeError(f"{module}.METHOD must be the Method record of {name!r}")
    return method


def method_summaries() -> list[str]:
    """``"name  summary"`` lines for ``recon train --help`` (no method module is imported)."""
    width = max(len(name) for name in REGISTRY)
    return [f"  {name:<{width}}  {summary}" for name, (_, summary) in REGISTRY.items()]
