"""The web studio in a real browser: Debian's Chromium driven by Playwright against `meshforge serve`.

Upload a picture, wait for the job, see the model in the viewer (non-background pixels in the canvas),
toggle wireframe and the single maps, download the GLB (validated), and see a refused upload's message.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("MESHFORGE_CHROMIUM", "/usr/bin/chromium")
BACKGROUND = np.array([0x2A, 0x2E, 0x36])  # the viewer's clear colour
ARTIFACTS = Path(os.environ.get("MESHFORGE_TEST_ARTIFACTS", "/tmp/meshforge-test-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    web = Path(__file__).resolve().parents[2] / "src" / "meshforge" / "web" / "node_modules" / "three"
    if not web.is_dir():
        pytest.fail("three.js is not installed for the studio: run `npm ci --prefix src/meshforge/web`")
    port = free_port()
    data = tmp_path_factory.mktemp("service")
    log = (data / "server.log").open("wb")  # a file, not a pipe: the access log must never block the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshforge.service",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--backend",
            "inflate",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/livez", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"service exited: {(data / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("service did not start within 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set MESHFORGE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def canvas_pixels(page) -> np.ndarray:
    png = page.locator("#canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def object_fraction(pixels: np.ndarray) -> float:
    return float((np.abs(pixels - BACKGROUND).max(axis=2) > 24).mean())


def test_studio_upload_view_toggle_download(server, browser, shared_images, tmp_path, validate):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('health').textContent.startsWith('ready')", timeout=30_000)

    page.fill("input[name=resolution]", "96")
    page.fill("input[name=faces]", "3000")
    page.select_option("select[name=texture_size]", "512")
    page.set_input_files("#file", str(shared_images / "triposr__chair.png"))
    page.wait_for_function("window.__studio.viewer === 'ready'", timeout=120_000)
    page.wait_for_timeout(500)  # a few frames
    assert page.locator(".job.selected .state").inner_text().lower() == "succeeded"
    pixels = canvas_pixels(page)
    page.screenshot(path=str(ARTIFACTS / "studio.png"))
    assert object_fraction(pixels) > 0.03, "the viewer shows no model"
    assert page.locator("#input-image").evaluate("img => img.complete && img.naturalWidth > 0")

    page.check("#wireframe")
    page.wait_for_timeout(300)
    wire = canvas_pixels(page)
    page.screenshot(path=str(ARTIFACTS / "studio_wireframe.png"))
    assert np.abs(wire - pixels).max(axis=2).mean() > 1.0, "wireframe toggle changed nothing"
    assert object_fraction(wire) < object_fraction(pixels)  # lines leave background showing through
    page.uncheck("#wireframe")

    page.check("input[name=map][value=normal]")
    page.wait_for_timeout(300)
    normal = canvas_pixels(page)
    # a tangent-space normal map is mostly (128, 128, 255): blue dominates where the model is
    obj = np.abs(normal - BACKGROUND).max(axis=2) > 24
    assert normal[obj][:, 2].mean() > normal[obj][:, 0].mean() + 40
    page.check("input[name=map][value=roughness]")
    page.wait_for_timeout(300)
    rough = canvas_pixels(page)[obj]
    assert np.abs(rough[:, 0] - rough[:, 1]).mean() < 3  # grey: one channel shown
    page.check("input[name=map][value=pbr]")

    with page.expect_download() as info:
        page.click("#downloads a[data-format=glb]")
    path = tmp_path / "download.glb"
    info.value.save_as(path)
    report = validate(path.read_bytes())
    assert report["errors"] == 0 and report["warnings"] == 0
    assert not errors, errors

    # a refused upload shows its reason, and the page keeps working
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    message = page.locator("#message").inner_text()
    assert "notes.png" in message and len(message) < 300
    page.screenshot(path=str(ARTIFACTS / "studio_error.png"))
    page.close()
