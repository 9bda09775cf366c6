"""Shared helpers of the browser tests: Chromium via Playwright, screenshots, waiting, free ports."""

import io
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 800, "height": 600}
# Chromium flags: headless in a container (no sandbox), WebGL through SwiftShader (no GPU), and no network
# access of its own (no QUIC, updates, sync, background requests).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-pings",
]
WAIT_SECONDS = 20.0


def ensure_chromium() -> None:
    """Install Chromium and Playwright through the project's set-up script when missing; skip only if that fails."""
    have_playwright = True
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        have_playwright = False
    if Path(CHROMIUM).exists() and have_playwright:
        return
    setup = REPO / "scripts" / "setup.sh"
    if shutil.which("bash") and setup.exists():
        subprocess.run(["bash", str(setup)], cwd=REPO, timeout=900, check=False, capture_output=True)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing and scripts/setup.sh could not install Debian's chromium package")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is missing and scripts/setup.sh could not install it")


def launch_chromium(playwright):
    """Headless ``CHROMIUM`` with ``CHROMIUM_ARGS`` from a started Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def open_viewer(browser, viewer):
    """A new ``VIEWPORT``-sized page on ``viewer.url``, returned once the viewer has seen it connect."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(viewer.url)
    assert viewer.wait_for_clients(1, timeout=WAIT_SECONDS), "the browser never connected to the viewer"
    return page


def dismiss_notifications(page) -> None:
    """Close viser's "software WebGL" notice (expected without a GPU) so it does not cover the view."""
    buttons = page.locator(".mantine-Notification-closeButton")
    try:
        buttons.first.wait_for(timeout=3000)
    except Exception:  # no notice shown: nothing to close
        return
    for i in range(buttons.count()):
        buttons.nth(i).click()
    page.locator(".mantine-Notification-root").first.wait_for(state="detached", timeout=5000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot(page) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.int16)


def wait_for(predicate, what: str, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
