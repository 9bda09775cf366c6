"""Procedural two-box blocks world for the scene tests: ground truth rendered by ``SuperquadricScene`` itself.

Two opaque box-like superquadrics (ε = 0.1) stand on a flat ground under a uniform background; cameras orbit at
30° elevation. Everything lives in the canonical frame (``T_world_canon`` = identity).
"""

import copy
import math

import torch

from recon.core import Camera
from recon.core.transforms import make_T
from recon.scenes.base import RenderOptions
from recon.scenes.superquadrics.blocks import init_block_set
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.geometry import raw_from_exponents
from recon.scenes.superquadrics.scene import SuperquadricScene

BOX_SCALES = (
    (1.6, 1.2, 1.2),
    (1.0, 2.0, 1.0),
)  # S: half extents ratio·S = (0.4, 0.3, 0.3), (0.25, 0.5, 0.25)
BOX_CENTERS = ((-0.45, -0.6, 0.0), (0.45, -0.4, 0.2))  # standing on the ground at y = -0.9
BOX_COLORS = ((0.85, 0.2, 0.15), (0.15, 0.35, 0.9))
GROUND_COLOR, BACKGROUND_COLOR = (0.55, 0.5, 0.4), (0.8, 0.85, 0.9)


def look_at(eye: torch.Tensor) -> torch.Tensor:
    """World->camera (OpenCV) of a camera at ``eye`` looking at the origin, +y up in the world."""
    z = -eye / eye.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, -1.0, 0.0]))
    x = x / x.norm()
    R = torch.stack([x, torch.linalg.cross(z, x), z])
    return make_T(R, -R @ eye)


def orbit_cameras(n: int, size: int, *, radius: float = 3.2, elevation_deg: float = 30.0) -> Camera:
    el = math.radians(elevation_deg)
    eyes = [
        torch.tensor([math.cos(el) * math.sin(a), math.sin(el), math.cos(el) * math.cos(a)]) * radius
        for a in torch.arange(n) * 2 * math.pi / n + 0.3
    ]
    f = 1.1 * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    return Camera(torch.stack([look_at(e) for e in eyes]), K.expand(n, 3, 3).clone(), size, size)


def _logit(c: float) -> float:
    return math.log(c / (1 - c))


def ground_truth_scene(cfg: SuperquadricsConfig) -> SuperquadricScene:
    """The two boxes, opaque (fine stage), uniform textures."""
    b = init_block_set(2, generator=torch.Generator().manual_seed(0), texture_size=cfg.texture_size)
    scene = SuperquadricScene(cfg, b, torch.eye(4, dtype=torch.float64))
    t = cfg.texture_size
    with torch.no_grad():
        scene.raw_exponents.copy_(raw_from_exponents(torch.full((2, 2), 0.1)))
        scene.log_scales.copy_(torch.tensor(BOX_SCALES).sub(cfg.scale_min).log())
        scene.rot6d.copy_(torch.tensor([[1.0, 0, 0, 0, 1, 0]] * 2))
        scene.translations.copy_(torch.tensor(BOX_CENTERS))
        scene.alpha_logits.fill_(5.0)
        for k, color in enumerate(BOX_COLORS):
            scene.texture_logits[k] = torch.tensor([_logit(c) for c in color]).expand(t, t, 3)
        scene.ground_texture_logits.copy_(torch.tensor([_logit(c) for c in GROUND_COLOR]).expand(t, t, 3))
        scene.background_texture_logits.copy_(
            torch.tensor([_logit(c) for c in BACKGROUND_COLOR]).expand(t, t, 3)
        )
    scene.set_stage(2)
    return scene.eval()


@torch.no_grad()
def opaque_render(scene: SuperquadricScene, cameras: Camera):
    """Render of the opaque blocks only (the fine-stage view of any scene), without touching ``scene``."""
    view = copy.deepcopy(scene).eval()
    view.set_stage(2)
    return view.render(cameras, RenderOptions(backend="auto"))


def silhouette_iou(pred_alpha: torch.Tensor, true_alpha: torch.Tensor) -> float:
    p, t = pred_alpha > 0.5, true_alpha > 0.5
    return float((p & t).sum()) / max(1.0, float((p | t).sum()))
