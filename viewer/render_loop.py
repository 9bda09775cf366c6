"""One render thread per browser client: progressive resolution, stale-frame skipping, disconnect safety.

While the camera moves the thread renders small preview images (``ViewState.preview_scale`` of the full size),
always from the newest camera, so frames queued behind a slow render are skipped rather than drawn late. Once the
camera has been still for ``IDLE_SECONDS`` it renders once at full resolution and sleeps until something changes.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import numpy as np
import torch
import viser

from recon.core import Camera, RenderOutput
from recon.viewer.camera import render_size, viser_to_camera
from recon.viewer.colormaps import output_to_image
from recon.viewer.state import RenderFn, ViewState

logger = logging.getLogger("recon.viewer")

IDLE_SECONDS = 0.2  # camera still this long -> render at full resolution
POLL_SECONDS = 0.05  # longest sleep of a render thread between checks (bounds the reaction to a stop request)
PREVIEW_JPEG_QUALITY = 70  # previews are transient; smaller frames reach the browser sooner
FULL_JPEG_QUALITY = 92
FAR_DEPTH = 1e3  # depth sent for empty pixels, so client-side geometry is never hidden behind "nothing"
MAX_VIEWER_DEPTH = 167.0  # viser transports depth as 24-bit fixed point with 1e-5 steps: (2^24 - 1) / 1e5


@dataclass(frozen=True)
class RenderRecord:
    """What a render thread drew last (for the status line and for tests)."""

    width: int
    height: int
    preview: bool
    seconds: float
    mode: str


def _depth_for_compositing(camera: Camera, output: RenderOutput) -> np.ndarray | None:
    """Camera-z depth (H, W) of a render for viser's depth compositing, or None without a depth map."""
    if output.depth is None:
        return None
    depth = output.depth.detach()[0, ..., 0].to("cpu", torch.float32)  # RenderOutput depths are camera z
    alpha = output.alpha.detach()[0, ..., 0].to("cpu", torch.float32)
    depth = torch.where(alpha > 0.5, depth, torch.full_like(depth, FAR_DEPTH))
    return np.clip(depth.numpy(), 0.0, MAX_VIEWER_DEPTH)


class ClientRenderLoop:
    """Renders the server-side view for one connected browser tab in its own thread.

    Args:
        client: the viser client.
        render_fn: the scene's render callback.
        get_state: returns the current (shared) view state.
        lock: held around ``render_fn`` (shared with a trainer), or None.
        on_rendered: called after each frame with the record (for counters and the status line).
    """

    def __init__(
        self,
        client: viser.ClientHandle,
        render_fn: RenderFn,
        *,
        get_state: Callable[[], ViewState],
        lock: AbstractContextManager | None,
        on_rendered: Callable[["ClientRenderLoop", RenderRecord], None],
    ) -> None:
        self.client = client
        self._render_fn = render_fn
        self._get_state = get_state
        self._lock = lock
        self._on_rendered = on_rendered
        self._cond = threading.Condition()
        self._version = 0  # bumped by every change that needs a new image
        self._preview_version = 0  # version of the newest preview drawn
        self._full_version = (
            0  # version of the newest full-resolution image drawn (nothing to draw until a change)
        )
        self._last_move = 0.0
        self._stopped = False
        self.last_record: RenderRecord | None = None
        self.last_image: np.ndarray | None = None  # (H, W, 3) uint8 of the last frame sent
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"recon-viewer-client-{client.client_id}", daemon=True
        )
        self._thread.start()

    # --- called from viser callbacks and the server ---------------------------------------------------------
    def camera_moved(self) -> None:
        """The client's camera changed: preview while it keeps moving, full resolution once it stops."""
        with self._cond:
            self._version += 1
            self._last_move = time.monotonic()
            self._cond.notify_all()

    def invalidate(self) -> None:
        """Something other than the camera changed (view state, scene parameters): redraw at full resolution."""
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def stop(self, *, join: bool = True) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if join and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -----------------------------------------------------------------------------------------
    def _next_job(self) -> tuple[bool, int] | None:
        """Wait for work; return ``(preview, version)`` to render, or None to stop."""
        with self._cond:
            while not self._stopped:
                idle = time.monotonic() - self._last_move
                moving = idle < IDLE_SECONDS
                if moving and self._version not in (self._preview_version, self._full_version):
                    return True, self._version
                if not moving and self._version != self._full_version:
                    return False, self._version
                self._cond.wait(timeout=min(POLL_SECONDS, IDLE_SECONDS - idle) if moving else POLL_SECONDS)
            return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            preview, version = job
            try:
                drawn = self._render_once(preview=preview)
            except Exception as exc:  # a failing frame must not kill the viewer: it is logged and shown
                if self._client_gone():
                    logger.info("viewer client %s disconnected during a render", self.client.client_id)
                    return
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning(
                        "viewer render failed: %s", message, exc_info=logger.isEnabledFor(logging.DEBUG)
                    )
                self.last_error = message
                drawn = True  # do not retry the same failing frame in a tight loop
            if not drawn:
                time.sleep(POLL_SECONDS)
                continue
            with self._cond:
                if drawn:
                    self._preview_version = version
                    if not preview:
                        self._full_version = version

    def _client_gone(self) -> bool:
        return self._stopped

    def _render_once(self, *, preview: bool) -> bool:
        """Render and send one frame from the client's current camera. Returns False if the camera is unknown."""
        cam = self.client.camera
        if cam._state.update_timestamp == 0.0 or cam.image_width <= 0 or cam.image_height <= 0:
            return False  # the browser has not reported its camera yet
        state = replace(self._get_state(), preview=preview)
        width, height = render_size(
            cam.image_width,
            cam.image_height,
            max_resolution=state.max_resolution,
            scale=state.resolution_scale,
        )
        camera = viser_to_camera(cam.wxyz, cam.position, fov_y=cam.fov, width=width, height=height)
        start = time.perf_counter()
        lock = self._lock if self._lock is not None else contextlib.nullcontext()
        with lock, torch.no_grad():
            output = self._render_fn(camera, state)
        image = output_to_image(output, state)
        depth = _depth_for_compositing(camera, output)
        seconds = time.perf_counter() - start
        if self._stopped:
            return True
        self.client.scene.set_background_image(
            image,
            format="jpeg",
            jpeg_quality=PREVIEW_JPEG_QUALITY if preview else FULL_JPEG_QUALITY,
            depth=depth,
        )
        self.last_error = None
        self.last_image = image
        record = RenderRecord(width=width, height=height, preview=preview, seconds=seconds, mode=state.mode)
        self.last_record = record
        self._on_rendered(self, record)
        return True
