"""The per-client render thread, with a stand-in client: progressive resolution, stale frames, failures."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from recon.viewer.render_loop import IDLE_SECONDS, ClientRenderLoop
from recon.viewer.state import ViewState
from tests.typecheck import typecheck_disabled

from .procedural import sphere_render_fn

TIMEOUT = 10.0


class FakeClient:
    """What the render loop uses of a viser client: its camera and ``scene.set_background_image``."""

    def __init__(self) -> None:
        self.client_id = 7
        self.camera = SimpleNamespace(
            _state=SimpleNamespace(update_timestamp=1.0),
            wxyz=np.array([0.0, 0.0, 1.0, 0.0]),  # 180 deg about y: looks along -z from +z
            position=np.array([0.0, 0.0, 3.0]),
            fov=1.0,
            image_width=160,
            image_height=120,
        )
        self.frames: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.scene = SimpleNamespace(set_background_image=self._set)

    def _set(self, image, format, jpeg_quality, depth):
        self.frames.append((image, depth))


def _wait(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def loop_factory():
    loops = []

    def make(render_fn, state=None, lock=None):
        client = FakeClient()
        records = []
        with typecheck_disabled():  # FakeClient stands in for a viser ClientHandle
            loop = ClientRenderLoop(
                client,
                render_fn,
                get_state=lambda: state or ViewState(),
                lock=lock,
                on_rendered=lambda _, r: records.append(r),
            )
        loops.append(loop)
        return client, loop, records

    yield make
    for loop in loops:
        loop.stop()


def test_full_render_after_invalidate(loop_factory):
    client, loop, records = loop_factory(sphere_render_fn)
    loop.invalidate()
    _wait(lambda: records, "a render")
    assert not records[0].preview and (records[0].width, records[0].height) == (160, 120)
    image, depth = client.frames[0]
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    # The sphere (radius 1, 3 units away) is in the middle; corners show the white background.
    assert (image[60, 80] != 255).any() and (image[0, 0] == 255).all()
    assert depth is not None and depth[60, 80] == pytest.approx(2.0, abs=0.05)


def test_previews_while_moving_then_one_full_render(loop_factory):
    client, loop, records = loop_factory(sphere_render_fn, ViewState(preview_scale=0.25))
    for i in range(10):  # the camera moves for ~0.3 s
        client.camera.position = np.array([0.01 * i, 0.0, 3.0])
        loop.camera_moved()
        time.sleep(0.03)
    _wait(lambda: records and not records[-1].preview, "the full-resolution render after the camera stopped")
    previews = [r for r in records if r.preview]
    assert previews and all((r.width, r.height) == (40, 30) for r in previews)
    assert len(previews) <= 10  # frames are skipped, never queued
    time.sleep(2 * IDLE_SECONDS)
    assert sum(not r.preview for r in records) == 1  # idle: nothing more is rendered


def test_render_failure_is_reported_and_loop_survives(loop_factory):
    calls = []

    def flaky(camera, state):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return sphere_render_fn(camera, state)

    client, loop, records = loop_factory(flaky)
    loop.invalidate()
    _wait(lambda: loop.last_error is not None, "the failure to be recorded")
    assert "boom" in loop.last_error
    loop.invalidate()
    _wait(lambda: records, "a render after the failure")
    assert loop.last_error is None and loop.alive


def test_render_waits_for_the_shared_lock(loop_factory):
    lock = threading.Lock()
    lock.acquire()  # a "training step" holds the lock
    client, loop, records = loop_factory(sphere_render_fn, lock=lock)
    loop.invalidate()
    time.sleep(0.3)
    assert not records  # no view of half-updated parameters
    lock.release()
    _wait(lambda: records, "the render once the lock is free")


def test_stop_mid_render(loop_factory):
    started, release = threading.Event(), threading.Event()

    def slow(camera, state):
        started.set()
        release.wait(TIMEOUT)
        return sphere_render_fn(camera, state)

    client, loop, records = loop_factory(slow)
    loop.invalidate()
    assert started.wait(TIMEOUT)
    loop.stop(join=False)  # the client disconnects while its frame renders
    release.set()
    _wait(lambda: not loop.alive, "the thread to end")
    assert not client.frames  # nothing is sent to a client that left


def test_unknown_camera_waits(loop_factory):
    client, loop, records = loop_factory(sphere_render_fn)
    client.camera._state.update_timestamp = 0.0  # the browser has not reported its camera yet
    loop.invalidate()
    time.sleep(0.2)
    assert not records
    client.camera._state.update_timestamp = 1.0
    _wait(lambda: records, "the render once the camera is known")
