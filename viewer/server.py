"""The browser viewer: a viser app around a render callback.

The viewer knows nothing about scene representations. Its host passes a :data:`RenderFn`; during training it also
passes the lock the trainer holds while it updates parameters, a statistics source and pause/export callbacks.

How a trainer uses it (``recon train --viewer``)::

    lock = threading.Lock()
    viewer = ViewerServer(render_fn, lock=lock, training_cameras=views, stats_fn=None, on_export=export)
    for step in range(steps):
        viewer.wait_while_paused()          # blocks while the user has paused training
        with lock:                          # a view never sees half-updated parameters
            loss = train_step(step)         # forward, backward, optimiser step, densification
        if step % log_every == 0:
            viewer.update_stats(TrainingStats(step=step, loss=float(loss), ...))
    viewer.close()

With nobody connected the cost per step is one uncontended lock acquisition and a flag check; renders happen in
per-client threads only while a browser tab is open, and are redrawn when new statistics arrive (at most once per
``REFRESH_SECONDS``).
"""

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import viser

from recon.core import Mesh, ReconError
from recon.viewer.camera import average_up_direction, camera_to_viser, viser_to_camera
from recon.viewer.camera_path import (
    DEFAULT_FPS,
    DEFAULT_SECONDS_PER_KEYFRAME,
    Keyframe,
    camera_path_target,
    write_camera_path,
)
from recon.viewer.render_loop import ClientRenderLoop, RenderRecord
from recon.viewer.scene_objects import add_geometry_node, thumbnail
from recon.viewer.state import (
    COLORMAPS,
    RENDER_MODES,
    CameraView,
    Geometry,
    RenderFn,
    TrainingStats,
    ViewState,
)

logger = logging.getLogger("recon.viewer")

MIN_RESOLUTION_CONTROL = 64  # range of the "Max resolution" slider, in pixels
MAX_RESOLUTION_CONTROL = 4096
REFRESH_SECONDS = 1.0  # during training, redraw open views at most this often as parameters change
STATS_POLL_SECONDS = 0.5  # how often stats_fn is polled
MAX_FRUSTA = 300  # more training cameras than this are subsampled evenly (the browser stays responsive)
FRUSTUM_SCALE_FRACTION = 0.03  # frustum size relative to the extent of the camera centres
GEOMETRY_VIEW_DISTANCE = 2.5  # without cameras, the first view is this many bounding radii from the centre


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rgb255(color: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * float(c))) for c in color)  # type: ignore[return-value]


class ViewerServer:
    """Serve the viewer on ``http://host:port`` (it starts on construction; call :meth:`close` to stop).

    Args:
        render_fn: renders one camera for a view state, or None to show only client-side geometry (mesh files).
        host: interface to bind; 127.0.0.1 unless told otherwise (a warning is logged for other hosts).
        port: TCP port (viser moves to the next free port if it is taken; see :attr:`port`).
        training_cameras: cameras drawn as frusta with thumbnails; clicking one moves the view to it.
        geometry: native geometry drawn client-side (switchable): a mapping name -> Mesh | PointCloud, or a list.
        lock: held around every ``render_fn`` call; the trainer holds it while it changes parameters.
        on_export: writes the mesh (as ``recon export`` would) and returns its path; adds an "Export mesh" button.
        stats_fn: returns the latest training statistics (polled); :meth:`update_stats` pushes them instead.
        on_pause: called with True/False when the user pauses/resumes training; adds the pause button.
        camera_path_dir: folder for saved camera paths (default: the current directory).
        view_state: initial view settings (mode, background, resolution cap).
        training: show the training panel even without ``stats_fn`` (for hosts that push :meth:`update_stats`).
        verbose: let viser print its banner.
    """

    def __init__(
        self,
        render_fn: RenderFn | None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        training_cameras: Sequence[CameraView] | None = None,
        geometry: Mapping[str, Geometry] | Sequence[Geometry] | None = None,
        lock: AbstractContextManager | None = None,
        on_export: Callable[[], Path] | None = None,
        stats_fn: Callable[[], TrainingStats | None] | None = None,
        on_pause: Callable[[bool], None] | None = None,
        camera_path_dir: Path | None = None,
        view_state: ViewState | None = None,
        training: bool = False,
        verbose: bool = False,
    ) -> None:
        if not is_loopback(host):
            logger.warning(
                "viewer bound to %s: anyone who can reach this address can view the scene and control training "
                "(use --host 127.0.0.1 with SSH port forwarding to keep it private)",
                host,
            )
        self._render_fn = render_fn
        self._lock = lock
        self._on_export = on_export
        self._stats_fn = stats_fn
        self._on_pause = on_pause
        self._camera_path_dir = Path(camera_path_dir) if camera_path_dir is not None else Path.cwd()
        self._state = view_state or ViewState()
        self._state_lock = threading.Lock()
        self._loops: dict[int, ClientRenderLoop] = {}
        self._loops_lock = threading.Lock()
        self._paused = threading.Event()
        self._closed = threading.Event()
        self._stats: TrainingStats | None = None
        self._stats_step_drawn: int | None = None
        self._last_refresh = 0.0
        self._refresh_timer: threading.Timer | None = None
        self._keyframes: list[Keyframe] = []
        self._frusta: list[viser.CameraFrustumHandle] = []
        self._hidden_frustum: int | None = None
        self._hidden_reached = False  # whether a view has been at the hidden frustum's camera
        self.frustum_scale = 0.0  # world size of the training-camera frusta (set when they are drawn)
        self._frustum_stride = 1  # training cameras per drawn frustum (subsampling above MAX_FRUSTA)
        self._geometry_handles: dict[str, viser.SceneNodeHandle] = {}
        self._geometry_boxes: dict[str, viser.GuiCheckboxHandle] = {}
        self.render_count = 0  # frames sent to browsers, previews included
        self.full_render_count = 0  # full-resolution frames sent
        self.last_export_path: Path | None = None
        self.last_frame: np.ndarray | None = None  # (H, W, 3) uint8: the last image sent to any browser tab
        self.last_camera_path: Path | None = None
        self._counter_lock = threading.Lock()

        self._server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self._server.gui.configure_theme(show_logo=False)
        # Shadows add a shadow-map pass per light and say nothing about a reconstruction; without them the
        # browser draws client-side meshes much sooner (seconds sooner under software WebGL).
        self._server.scene.configure_default_lights(enabled=True, cast_shadow=False)
        # No environment map: prefiltering it stalls software WebGL (headless browsers, remote desktops) for
        # ~10 s when the first mesh appears; the default lights are enough to inspect geometry.
        self._server.scene.configure_environment_map(hdri=None)
        self._cameras = list(training_cameras or [])
        self._setup_initial_camera(geometry)
        self._build_view_gui(geometry)
        self._stats_markdown: viser.GuiMarkdownHandle | None = None
        self._pause_button: viser.GuiButtonHandle | None = None
        if training or stats_fn is not None or on_pause is not None:
            self._build_training_gui(pause=True)
        if on_export is not None:
            self._build_export_gui()
        self._build_camera_path_gui()
        self._add_training_cameras()
        self._server.on_client_connect(self._client_connected)
        self._server.on_client_disconnect(self._client_disconnected)
        self._poller: threading.Thread | None = None
        if stats_fn is not None:
            self._poller = threading.Thread(target=self._poll_stats, name="recon-viewer-stats", daemon=True)
            self._poller.start()

    # --- public API -----------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.get_host()

    @property
    def port(self) -> int:
        return self._server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def viser_server(self) -> viser.ViserServer:
        """The underlying viser server (for hosts that add their own controls)."""
        return self._server

    @property
    def view_state(self) -> ViewState:
        with self._state_lock:
            return self._state

    def set_view_state(self, **changes: object) -> ViewState:
        """Change view settings (as the GUI does), update the controls and redraw every open view."""
        with self._state_lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]
            state = self._state
        self._mode_dropdown.value = state.mode
        self._colormap_dropdown.value = state.colormap
        self._background_rgb.value = _rgb255(state.background)
        self._resolution_slider.value = state.max_resolution
        self.refresh()
        return state

    def control_ids(self) -> dict[str, str]:
        """DOM ids of the main controls (``render_mode``, ``colormap``, ``max_resolution``, ``server_render``), for
        browser automation."""
        handles = {
            "render_mode": self._mode_dropdown,
            "colormap": self._colormap_dropdown,
            "max_resolution": self._resolution_slider,
            "server_render": self._server_render_box,
        }
        return {name: handle._impl.uuid for name, handle in handles.items()}

    def num_clients(self) -> int:
        return len(self._server.get_clients())

    def refresh(self) -> None:
        """Redraw every open view at full resolution (call after the scene's parameters changed)."""
        self._last_refresh = time.monotonic()
        with self._loops_lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.invalidate()

    def update_stats(self, stats: TrainingStats) -> None:
        """Show new training statistics; redraws open views when the step advanced (rate-limited)."""
        self._stats = stats
        if self._stats_markdown is None:  # a finished run: show its statistics without a pause button
            self._build_training_gui(pause=False)
        if self._stats_markdown is not None:
            self._stats_markdown.content = self._format_stats(stats)
        if stats.step == self._stats_step_drawn:
            return
        wait = REFRESH_SECONDS - (time.monotonic() - self._last_refresh)
        if wait <= 0:
            self._stats_step_drawn = stats.step
            self.refresh()
        elif self._refresh_timer is None or not self._refresh_timer.is_alive():
            # Rate-limited: redraw once the interval has passed, so the last steps of a run are shown too.
            self._refresh_timer = threading.Timer(wait, self._deferred_refresh)
            self._refresh_timer.daemon = True
            self._refresh_timer.start()

    def _deferred_refresh(self) -> None:
        if self._stats is not None and not self._closed.is_set():
            self._stats_step_drawn = self._stats.step
            self.refresh()

    def is_paused(self) -> bool:
        """True while the user has paused training in the browser."""
        return self._paused.is_set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()
        if self._pause_button is not None:
            self._pause_button.label = "Resume training" if paused else "Pause training"
        if self._on_pause is not None:
            self._on_pause(paused)

    def wait_while_paused(self, poll_seconds: float = 0.1) -> None:
        """Block the calling (training) thread while paused; returns at once when not paused or when closed."""
        while self._paused.is_set() and not self._closed.is_set():
            time.sleep(poll_seconds)

    def set_geometry(self, name: str, geometry: Geometry) -> None:
        """Add or replace client-side geometry (e.g. the current triangle soup during training)."""
        visible = self._geometry_boxes[name].value if name in self._geometry_boxes else True
        self._add_geometry(name, geometry, visible=visible)
        if name not in self._geometry_boxes:
            self._add_geometry_checkbox(name, visible)

    def add_keyframe(self, client: viser.ClientHandle) -> Keyframe:
        """Append the client's current camera to the camera path being recorded."""
        cam = client.camera
        camera = viser_to_camera(
            cam.wxyz, cam.position, fov_y=cam.fov, width=cam.image_width, height=cam.image_height
        )
        time_s = self._keyframes[-1].time + DEFAULT_SECONDS_PER_KEYFRAME if self._keyframes else 0.0
        keyframe = Keyframe.from_camera(camera, time_s)
        self._keyframes.append(keyframe)
        self._keyframe_markdown.content = f"{len(self._keyframes)} keyframe(s)"
        return keyframe

    def save_camera_path(self, name: str | None = None) -> Path:
        """Write the recorded keyframes as JSON (see :mod:`recon.viewer.camera_path`); returns the path.

        Args:
            name: file name inside the camera-path folder (default: the "File" field a browser edits). Only a
                plain, sanitised file name is accepted (:func:`~recon.viewer.camera_path.camera_path_target`).

        Raises:
            ReconError: no keyframes, a name that leaves the folder, or an existing file that is not a camera path.
        """
        if not self._keyframes:
            raise ReconError("camera path: no keyframes to save (add at least one)")
        target = camera_path_target(self._camera_path_dir, self._path_text.value if name is None else name)
        self.last_camera_path = write_camera_path(target, self._keyframes, fps=DEFAULT_FPS)
        return self.last_camera_path

    def export(self) -> Path:
        """Run the export callback and return the path it wrote."""
        if self._on_export is None:
            raise RuntimeError("this viewer has no export callback")
        self.last_export_path = Path(self._on_export())
        return self.last_export_path

    def wait_for_clients(self, count: int = 1, timeout: float = 30.0) -> bool:
        """Wait until ``count`` browser tabs are connected and have reported their camera."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            clients = list(self._server.get_clients().values())
            if len(clients) >= count and all(c.camera._state.update_timestamp > 0 for c in clients):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop the render threads and the server."""
        self._closed.set()
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
        with self._loops_lock:
            loops = list(self._loops.values())
            self._loops.clear()
        for loop in loops:
            loop.stop()
        self._server.stop()

    def __enter__(self) -> "ViewerServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- clients --------------------------------------------------------------------------------------------
    def _client_connected(self, client: viser.ClientHandle) -> None:
        if self._render_fn is None or self._closed.is_set():
            return
        loop = ClientRenderLoop(
            client,
            self._render_fn,
            get_state=lambda: self.view_state,
            lock=self._lock,
            on_rendered=self._rendered,
        )
        with self._loops_lock:
            self._loops[client.client_id] = loop
        client.camera.on_update(lambda camera: self._camera_moved(camera, loop))
        loop.invalidate()

    def _camera_moved(self, camera: viser.CameraHandle, loop: ClientRenderLoop) -> None:
        loop.camera_moved()
        hidden = self._hidden_frustum
        if hidden is None or not self._frusta:
            return
        centre = np.asarray(camera_to_viser(self._cameras[hidden * self._frustum_stride].camera)[1])
        at_camera = np.linalg.norm(np.asarray(camera.position) - centre) <= self.frustum_scale
        if at_camera:
            self._hidden_reached = True
        elif self._hidden_reached:
            # The view left the training camera it sat at: show that camera's frustum again. (Reports from
            # before the view got there, e.g. the browser's default camera on connection, do not count.)
            self._hidden_frustum = None
            self._hidden_reached = False
            self._frusta[hidden].visible = bool(self._frusta_box.value)

    def _client_disconnected(self, client: viser.ClientHandle) -> None:
        with self._loops_lock:
            loop = self._loops.pop(client.client_id, None)
        if loop is not None:
            loop.stop(join=False)

    def _rendered(self, loop: ClientRenderLoop, record: RenderRecord) -> None:
        self.last_frame = loop.last_image
        with self._counter_lock:
            self.render_count += 1
            if not record.preview:
                self.full_render_count += 1
        if not record.preview:
            self._status_markdown.content = (
                f"Last render: {record.width}x{record.height} {record.mode}, {1000 * record.seconds:.0f} ms"
            )

    # --- GUI ------------------------------------------------------------------------------------------------
    def _setup_initial_camera(self, geometry: Mapping[str, Geometry] | Sequence[Geometry] | None) -> None:
        """Start at the first training camera (its frustum is hidden while the view is there), orbiting about
        the point ahead of it nearest to the cameras' centre; without cameras, look at the geometry from outside."""
        if not self._cameras:
            self._look_at_geometry(geometry)
            return
        up = average_up_direction([v.camera for v in self._cameras])
        first = self._cameras[0].camera
        _, position, fov_y, _ = camera_to_viser(first)
        eye = torch.tensor(position, dtype=torch.float64)
        forward = first.T_world_cam()[0, :3, 2].detach().to("cpu", torch.float64)
        centres = torch.cat([v.camera.centers() for v in self._cameras]).detach().to("cpu", torch.float64)
        distance = float((centres.mean(0) - eye) @ forward)
        target = eye + (distance if distance > 1e-6 else 1.0) * forward
        self._server.scene.set_up_direction(up)
        self._server.initial_camera.position = position
        self._server.initial_camera.look_at = _xyz(target)
        self._server.initial_camera.up = up
        self._server.initial_camera.fov = fov_y
        self._hidden_frustum = 0

    def _look_at_geometry(self, geometry: Mapping[str, Geometry] | Sequence[Geometry] | None) -> None:
        items = list(geometry.values()) if isinstance(geometry, Mapping) else list(geometry or [])
        points = [g.vertices if isinstance(g, Mesh) else g.points for g in items]
        points = [p.detach().to("cpu", torch.float64) for p in points if len(p)]
        if not points:
            return
        allp = torch.cat(points)
        lo, hi = allp.min(0).values, allp.max(0).values
        centre, radius = (lo + hi) / 2, max(float((hi - lo).norm()) / 2, 1e-6)
        direction = torch.tensor([1.0, 1.0, 0.7], dtype=torch.float64)  # an oblique view from above (+z up)
        eye = centre + GEOMETRY_VIEW_DISTANCE * radius * direction / direction.norm()
        self._server.initial_camera.position = _xyz(eye)
        self._server.initial_camera.look_at = _xyz(centre)

    def _build_view_gui(self, geometry: Mapping[str, Geometry] | Sequence[Geometry] | None) -> None:
        gui = self._server.gui
        state = self._state
        with gui.add_folder("View"):
            server_side = self._render_fn is not None  # the render controls mean nothing without a render
            self._mode_dropdown = gui.add_dropdown(
                "Render mode", RENDER_MODES, initial_value=state.mode, visible=server_side
            )
            self._colormap_dropdown = gui.add_dropdown(
                "Depth colormap", COLORMAPS, initial_value=state.colormap, visible=server_side
            )
            self._background_rgb = gui.add_rgb("Background", _rgb255(state.background), visible=server_side)
            self._resolution_slider = gui.add_slider(
                "Max resolution",
                min=min(MIN_RESOLUTION_CONTROL, int(state.max_resolution)),
                max=max(MAX_RESOLUTION_CONTROL, int(state.max_resolution)),
                step=64,
                initial_value=int(state.max_resolution),
                visible=server_side,
            )
            self._server_render_box = gui.add_checkbox("Server render", server_side, visible=server_side)
            self._frusta_box = gui.add_checkbox("Training cameras", True, visible=bool(self._cameras))
            self._status_markdown = gui.add_markdown(
                "No render yet" if self._render_fn is not None else "Client-side view"
            )
            self._geometry_folder = gui.add_folder("Geometry")

        def on_state_change(_: object) -> None:
            bg = tuple(min(1.0, max(0.0, c / 255.0)) for c in self._background_rgb.value)
            with self._state_lock:
                self._state = replace(
                    self._state,
                    mode=self._mode_dropdown.value,
                    colormap=self._colormap_dropdown.value,
                    background=bg,
                    max_resolution=int(self._resolution_slider.value),
                )
            self.refresh()

        for handle in (
            self._mode_dropdown,
            self._colormap_dropdown,
            self._background_rgb,
            self._resolution_slider,
        ):
            handle.on_update(on_state_change)

        @self._server_render_box.on_update
        def _(_: object) -> None:
            if self._server_render_box.value:
                self.refresh()
            else:
                self._server.scene.set_background_image(None)

        @self._frusta_box.on_update
        def _(_: object) -> None:
            for i, frustum in enumerate(self._frusta):
                frustum.visible = self._frusta_box.value and i != self._hidden_frustum

        items = (
            geometry.items()
            if isinstance(geometry, Mapping)
            else ((f"geometry {i}", g) for i, g in enumerate(geometry or []))
        )
        for name, geom in items:
            # With a server render the client-side copy starts hidden (it would cover the render); without one it is the view.
            visible = self._render_fn is None
            self._add_geometry(name, geom, visible=visible)
            self._add_geometry_checkbox(name, visible)

    def _add_geometry_checkbox(self, name: str, visible: bool) -> None:
        with self._geometry_folder:
            box = self._server.gui.add_checkbox(f"Show {name}", visible)

        @box.on_update
        def _(_: object) -> None:
            handle = self._geometry_handles.get(name)
            if handle is not None:
                handle.visible = box.value

        self._geometry_boxes[name] = box

    def _add_geometry(self, name: str, geometry: Geometry, *, visible: bool) -> None:
        node = "/geometry/" + "".join(ch if ch.isalnum() else "_" for ch in name)
        handle = add_geometry_node(self._server.scene, node, geometry, visible=visible)
        if handle is not None:
            self._geometry_handles[name] = handle

    def _build_training_gui(self, *, pause: bool) -> None:
        gui = self._server.gui
        with gui.add_folder("Training"):
            self._stats_markdown = gui.add_markdown("Waiting for the first step...")
            if pause:
                self._pause_button = gui.add_button("Pause training")
        if self._pause_button is not None:
            self._pause_button.on_click(lambda _: self.set_paused(not self.is_paused()))

    def _build_export_gui(self) -> None:
        gui = self._server.gui
        with gui.add_folder("Export"):
            button = gui.add_button("Export mesh")
            self._export_markdown = gui.add_markdown("Writes the mesh as `recon export` does.")

        @button.on_click
        def _(event: viser.GuiEvent) -> None:
            button.disabled = True
            try:
                path = self.export()
                self._export_markdown.content = f"Wrote `{path}`"
                if event.client is not None:
                    event.client.add_notification("Mesh exported", str(path), auto_close_seconds=10.0)
            except Exception as exc:  # an export failure is shown to the user, never swallowed
                logger.warning("export failed: %s", exc)
                self._export_markdown.content = f"Export failed: {exc}"
            finally:
                button.disabled = False

    def _build_camera_path_gui(self) -> None:
        gui = self._server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            add = self._add_keyframe_button = gui.add_button("Add keyframe")
            clear = gui.add_button("Clear keyframes")
            self._keyframe_markdown = gui.add_markdown("0 keyframe(s)")
            self._path_text = gui.add_text("File", "camera_path.json")
            save = self._save_button = gui.add_button("Save camera path")
            self._camera_path_markdown = gui.add_markdown(f"Saved under `{self._camera_path_dir}`")

        @add.on_click
        def _(event: viser.GuiEvent) -> None:
            if event.client is not None:
                self.add_keyframe(event.client)

        @clear.on_click
        def _(_: object) -> None:
            self._keyframes.clear()
            self._keyframe_markdown.content = "0 keyframe(s)"

        @save.on_click
        def _(event: viser.GuiEvent) -> None:
            try:
                path = self.save_camera_path()
                self._camera_path_markdown.content = (
                    f"Wrote `{path}` (use `recon render RUN --trajectory {path}`)"
                )
            except Exception as exc:  # bad path or no keyframes: tell the user
                self._camera_path_markdown.content = f"Not saved: {exc}"

    def _add_training_cameras(self) -> None:
        if not self._cameras:
            return
        centres = torch.cat([v.camera.centers() for v in self._cameras]).detach().to("cpu", torch.float64)
        extent = float((centres.max(0).values - centres.min(0).values).norm()) if len(centres) > 1 else 1.0
        scale = max(extent * FRUSTUM_SCALE_FRACTION, 1e-3)
        self.frustum_scale = scale
        stride = max(1, int(np.ceil(len(self._cameras) / MAX_FRUSTA)))
        self._frustum_stride = stride
        for i in range(0, len(self._cameras), stride):
            view = self._cameras[i]
            wxyz, position, fov_y, aspect = camera_to_viser(view.camera)
            frustum = self._server.scene.add_camera_frustum(
                f"/training_cameras/{i:05d}",
                fov=fov_y,
                aspect=aspect,
                scale=scale,
                thickness=scale * 0.03,
                color=(230, 120, 30),
                image=thumbnail(view.image) if view.image is not None else None,
                format="jpeg",
                wxyz=wxyz,
                position=position,
            )
            frustum.on_click(self._make_frustum_click(len(self._frusta), wxyz, position, fov_y))
            frustum.visible = len(self._frusta) != self._hidden_frustum
            self._frusta.append(frustum)

    def _make_frustum_click(
        self, index: int, wxyz: tuple, position: tuple, fov_y: float
    ) -> Callable[[object], None]:
        def on_click(event: viser.SceneNodePointerEvent) -> None:
            self.move_to_training_camera(event.client, index, wxyz=wxyz, position=position, fov_y=fov_y)

        return on_click  # type: ignore[return-value]

    def move_to_training_camera(
        self, client: viser.ClientHandle, index: int, *, wxyz: tuple, position: tuple, fov_y: float
    ) -> None:
        """Put the client's view at a training camera; that camera's frustum is hidden while the view is there
        (its thumbnail would otherwise cover the whole view)."""
        if self._frusta_box.value:
            if self._hidden_frustum is not None:
                self._frusta[self._hidden_frustum].visible = True
            self._frusta[index].visible = False
        self._hidden_frustum = index
        self._hidden_reached = False
        camera = client.camera
        with client.atomic():
            camera.wxyz = wxyz
            camera.position = position
            camera.fov = fov_y

    # --- statistics -----------------------------------------------------------------------------------------
    @staticmethod
    def _format_stats(stats: TrainingStats) -> str:
        step = f"{stats.step}" + (f" / {stats.max_steps}" if stats.max_steps else "")
        rows = [("Step", step)]
        if stats.loss is not None:
            rows.append(("Loss", f"{stats.loss:.5f}"))
        if stats.psnr is not None:
            rows.append(("PSNR", f"{stats.psnr:.2f} dB"))
        if stats.num_primitives is not None:
            rows.append(("Primitives", f"{stats.num_primitives:,}"))
        if stats.steps_per_second is not None:
            rows.append(("Steps/s", f"{stats.steps_per_second:.2f}"))
        if stats.rays_per_second is not None:
            rows.append(("Rays/s", f"{stats.rays_per_second:,.0f}"))
        return "\n".join(f"- **{k}**: {v}" for k, v in rows)

    def _poll_stats(self) -> None:
        assert self._stats_fn is not None
        while not self._closed.wait(STATS_POLL_SECONDS):
            try:
                stats = self._stats_fn()
            except Exception as exc:  # a failing statistics source is logged, the viewer keeps running
                logger.warning("viewer stats_fn failed: %s", exc)
                continue
            if stats is not None:
                with contextlib.suppress(RuntimeError):  # server shutting down
                    self.update_stats(stats)


def _xyz(point: torch.Tensor) -> tuple[float, float, float]:
    """A (3,) tensor as the plain 3-tuple viser's camera settings take."""
    x, y, z = (float(v) for v in point)
    return x, y, z
