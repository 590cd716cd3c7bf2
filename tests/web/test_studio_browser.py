"""The web studio in a real browser: Debian's Chromium driven by Playwright against `meshforge serve`.

Upload a picture, wait for the job, see the model in the viewer (non-background pixels in the canvas),
toggle wireframe and the single maps, download the GLB (validated), and see a refused upload's message.
Against a server with API keys: the key field, the job list and its live updates (the event stream read
with fetch), only backends that can run offered, the warning beside the viewer and in the list, the
cut-out picture, a failed job clearing the viewer, and deleting jobs (their files gone from the data dir).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
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


def start_service(data: Path, *args: str, env: dict[str, str] | None = None):
    """``python -m meshforge.service`` on a free loopback port; yields its URL, stops it afterwards."""
    web = Path(__file__).resolve().parents[2] / "src" / "meshforge" / "web" / "node_modules" / "three"
    if not web.is_dir():
        pytest.fail("three.js is not installed for the studio: run `npm ci --prefix src/meshforge/web`")
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
    environ.update(env or {})
    data.mkdir(parents=True, exist_ok=True)
    log = (data / "server.log").open("wb")  # a file, not a pipe: the access log must never block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshforge.service", "--port", str(port), "--data-dir", str(data), *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=environ,
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


#: the default server's caps on options (below the option table's maxima, so the form must say this server's)
CAPS = {"resolution": 512, "faces": 100_000, "texture_size": 2048}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {f"MESHFORGE_SERVICE_MAX_{name.upper()}": str(cap) for name, cap in CAPS.items()}
    yield from start_service(tmp_path_factory.mktemp("service"), "--backend", "inflate", env=env)


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


def canvas_content(page) -> np.ndarray:
    """What the WebGL canvas itself holds (no page elements drawn over it)."""
    url = page.locator("#canvas").evaluate("c => c.toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def object_fraction(pixels: np.ndarray) -> float:
    return float((np.abs(pixels - BACKGROUND).max(axis=2) > 24).mean())


def open_studio(browser, url: str):
    """A 1280×800 page on the studio, once its health line says ready; ``(page, page errors)``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('health').textContent.startsWith('ready')", timeout=30_000)
    return page, errors


def generate_in_studio(page, picture: Path, resolution: int, faces: int, texture_size: int) -> None:
    """Set the options, drop ``picture`` on the studio and wait until the viewer shows the result."""
    page.fill("input[name=resolution]", str(resolution))
    page.fill("input[name=faces]", str(faces))
    page.select_option("select[name=texture_size]", str(texture_size))
    page.set_input_files("#file", str(picture))
    page.wait_for_function("window.__studio.viewer === 'ready'", timeout=120_000)


def test_the_studio_form_is_built_from_the_option_table(server, browser):
    """Ranges, choices and defaults of the studio's inputs are the option table's (meshforge.config.OPTIONS),
    each maximum lowered to the server's cap; the re-export panel's too, with the server's presets."""
    from meshforge.config import OPTIONS, PRESETS

    page, errors = open_studio(browser, server)
    page.wait_for_function("document.getElementById('options').dataset.loaded === 'true'", timeout=10_000)

    def attrs(selector: str) -> dict[str, str]:
        return page.locator(selector).evaluate("e => ({min: e.min, max: e.max, value: e.value})")

    for selector, name in [
        ("#options [name=resolution]", "resolution"),
        ("#options [name=faces]", "faces"),
        ("#options [name=foreground_ratio]", "foreground_ratio"),
        ("#rx-faces", "faces"),
    ]:
        option, got = OPTIONS[name], attrs(selector)
        highest = [x for x in (option.maximum, CAPS.get(name)) if x is not None]
        assert float(got["min"]) == option.minimum, (selector, got)
        assert (float(got["max"]) if got["max"] else None) == (min(highest) if highest else None), (selector, got)
        assert float(got["value"]) == option.default, (selector, got)
    texture = OPTIONS["texture_size"]
    allowed = [2**k for k in range(20) if texture.minimum <= 2**k <= min(texture.maximum, CAPS["texture_size"])]
    for selector in ("#options [name=texture_size]", "#rx-texture-size"):
        offered = page.locator(f"{selector} option").evaluate_all("os => os.map(o => Number(o.value))")
        assert offered == allowed and int(page.locator(selector).input_value()) == texture.default, offered
    background = OPTIONS["background"]
    offered = page.locator("#options [name=background] option").evaluate_all("os => os.map(o => o.value)")
    assert offered == list(background.choices) and page.locator("#options [name=background]").input_value() == (
        background.default
    )
    assert page.locator("#options [name=no_texture]").is_checked() is (not OPTIONS["textures"].default)
    presets = page.locator("#rx-preset option").evaluate_all("os => os.map(o => o.value)")
    assert presets == ["", *PRESETS]
    page.screenshot(path=str(ARTIFACTS / "studio_form.png"))
    assert not errors, errors
    page.close()


def test_studio_upload_view_toggle_download(server, browser, shared_images, tmp_path, validate):
    page, errors = open_studio(browser, server)
    generate_in_studio(page, shared_images / "triposr__chair.png", 96, 3000, 512)
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


# -- the studio outside the default setup: API keys, a backend without weights, warnings, failures ----
KEY = "studio-key-0123"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A server with API keys on, ``auto`` as its backend and an empty weights folder (TripoSR cannot run,
    whatever the machine's Hugging Face cache holds, so ``auto`` falls back to inflate with a warning)."""
    root = tmp_path_factory.mktemp("keyed")
    (root / "no-weights").mkdir()
    env = {"MESHFORGE_SERVICE_API_KEYS": KEY, "MESHFORGE_SERVICE_WEIGHTS": str(root / "no-weights")}
    data = root / "data"
    for url in start_service(data, "--backend", "auto", env=env):
        yield url, data


def api_get(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def image_alpha(page, selector: str) -> np.ndarray:
    """The alpha channel of a shown <img>, read back through a 2D canvas in the page."""
    values = page.locator(selector).evaluate(
        """img => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; const a = [];
        for (let i = 3; i < d.length; i += 4) a.push(d[i]); return [c.height, c.width, a]; }"""
    )
    h, w, alpha = values
    return np.array(alpha, dtype=np.uint8).reshape(h, w)


@pytest.mark.slow  # a second server and two jobs in a software-rendered browser: ~40 s on 2 cores
def test_studio_with_api_keys_warnings_cutout_failed_job_and_delete(keyed_server, browser, shared_images, tmp_path):
    url, data = keyed_server
    page, errors = open_studio(browser, url)

    # without a key the studio says what to do instead of failing silently
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert "API key" in page.locator("#message").inner_text()
    page.fill("#api-key", "wrong-key-0000")
    page.press("#api-key", "Enter")
    page.wait_for_function("document.getElementById('message').textContent.includes('refused')", timeout=10_000)
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#message", state="hidden", timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('meshforge.apiKey')") == KEY

    # only backends that can run are offered; the missing weights are explained
    page.wait_for_function("document.querySelectorAll('select[name=backend] option').length >= 2", timeout=10_000)
    offered = page.locator("select[name=backend] option").evaluate_all("os => os.map(o => o.value)")
    assert offered == ["auto", "inflate"], offered
    assert "meshforge models pull triposr" in page.locator("#backend-note").inner_text()

    page.fill("input[name=resolution]", "32")
    page.fill("input[name=faces]", "500")
    page.select_option("select[name=texture_size]", "256")
    page.fill("input[name=foreground_ratio]", "0.6")
    page.set_input_files("#file", str(shared_images / "triposr__chair.png"))
    page.wait_for_function("window.__studio.viewer === 'ready'", timeout=60_000)
    page.wait_for_timeout(500)
    chair_id = page.evaluate("window.__studio.jobId")
    # the progress came over the authenticated event stream (fetch + SSE parsing), not by polling
    assert page.evaluate(f"window.__studio.events['{chair_id}'] || 0") >= 1
    assert object_fraction(canvas_content(page)) > 0.03, "the viewer shows no model"
    status, job = api_get(f"{url}/v1/jobs/{chair_id}")
    assert status == 200 and job["options"]["foreground_ratio"] == 0.6

    # the auto fallback is shown beside the viewer and as a badge in the job list
    assert page.locator("#warnings").is_visible()
    assert "no model weights found" in page.locator("#warnings").inner_text()
    assert page.locator(f'li[data-id="{chair_id}"] .badge.warn').is_visible()
    # the cut-out picture the backend saw: the background is transparent, the chair opaque
    page.wait_for_function(
        "(() => { const i = document.getElementById('cutout-image'); return i.complete && i.naturalWidth > 0; })()",
        timeout=10_000,
    )
    alpha = image_alpha(page, "#cutout-image")
    assert alpha.shape[0] == alpha.shape[1] and alpha[0].max() == 0 and (alpha == 255).mean() > 0.05
    assert page.locator("#input-image").evaluate("img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "studio_keys_warning_cutout.png"))

    # a download with the key
    with page.expect_download() as info:
        page.click("#downloads a[data-format=glb]")
    path = tmp_path / "keyed.glb"
    info.value.save_as(path)
    assert path.read_bytes()[:4] == b"glTF"

    # a job that fails: selecting it clears the viewer and shows its error, not the previous model
    grey = tmp_path / "grey wall.png"
    Image.new("RGB", (64, 64), (120, 120, 120)).save(grey)
    page.set_input_files("#file", str(grey))
    page.wait_for_selector("li.job .state.failed", timeout=60_000)
    failed = page.locator("li.job:has(.state.failed)")
    failed_id = failed.get_attribute("data-id")
    failed.click()
    page.wait_for_function("window.__studio.viewer === 'empty'", timeout=10_000)
    page.wait_for_timeout(300)
    assert object_fraction(canvas_content(page)) < 0.002, "the failed job still shows the previous model"
    note = page.locator("#viewer-note")
    assert note.is_visible() and "no object" in note.inner_text()
    assert page.locator("#downloads a").count() == 0
    page.screenshot(path=str(ARTIFACTS / "studio_failed_job.png"))

    # delete both jobs: gone from the list, from the API and from the data dir
    for job_id in (failed_id, chair_id):
        assert (data / "jobs" / job_id).is_dir()
        page.once("dialog", lambda d: d.accept())
        page.click(f'li[data-id="{job_id}"] [data-delete]')
        page.wait_for_selector(f'li[data-id="{job_id}"]', state="detached", timeout=10_000)
        assert api_get(f"{url}/v1/jobs/{job_id}")[0] == 404
        assert not (data / "jobs" / job_id).exists()
    assert page.evaluate("window.__studio.viewer") == "empty"
    assert object_fraction(canvas_content(page)) < 0.002
    page.screenshot(path=str(ARTIFACTS / "studio_deleted.png"))
    assert not errors, errors
    page.close()


@pytest.mark.slow  # a generate job and two re-exports in a software-rendered browser
def test_studio_reexport_twice_nests_both_and_shows_the_second(server, browser, shared_images, tmp_path, validate):
    from meshforge.io.meshes import load_mesh

    page, errors = open_studio(browser, server)
    generate_in_studio(page, shared_images / "triposr__chair.png", 64, 2000, 256)
    parent = page.evaluate("window.__studio.jobId")
    assert page.locator("#reexport").is_visible()

    ids = []
    for faces in ("800", "250"):
        page.click(f'li.job[data-id="{parent}"]')
        page.wait_for_selector("#reexport:not([hidden])")
        page.fill("#rx-faces", faces)
        page.select_option("#rx-texture-size", "256")
        page.click("#reexport button[type=submit]")
        page.wait_for_function(
            f"window.__studio.viewer === 'ready' && window.__studio.jobId !== {json.dumps(parent)}"
            + "".join(f" && window.__studio.jobId !== {json.dumps(i)}" for i in ids),
            timeout=120_000,
        )
        ids.append(page.evaluate("window.__studio.jobId"))
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "studio_reexport.png"))
    # both exports are listed under their parent, the viewer shows the second one
    nested = page.locator(f'li.job.export[data-parent="{parent}"]')
    assert nested.count() == 2
    assert [nested.nth(i).get_attribute("data-id") for i in range(2)] == ids
    assert page.locator(f'li.job[data-id="{ids[1]}"]').get_attribute("class").split().count("selected") == 1
    assert "250 faces" in page.locator("#title").inner_text()
    assert object_fraction(canvas_pixels(page)) > 0.03, "the viewer shows no model"

    page.click(f'li.job[data-id="{parent}"]')
    page.wait_for_function(f"window.__studio.viewer === 'ready' && window.__studio.jobId === {json.dumps(parent)}")
    page.screenshot(path=str(ARTIFACTS / "studio_reexport_panel.png"))
    counts = []
    for export_id in ids:
        page.click(f'li.job[data-id="{export_id}"]')
        page.wait_for_function(
            f"window.__studio.viewer === 'ready' && window.__studio.jobId === {json.dumps(export_id)}"
        )
        with page.expect_download() as info:
            page.click("#downloads a[data-format=glb]")
        path = tmp_path / f"{export_id}.glb"
        info.value.save_as(path)
        report = validate(path.read_bytes())
        assert report["errors"] == 0, report["messages"]
        counts.append(load_mesh(path).n_faces())
    assert 0 < counts[1] <= 250 < counts[0] <= 800, counts
    assert not errors, errors
    page.close()


# -- prompt jobs: the studio's prompt box, a server with a tiny random text-to-image model ----------------
@pytest.fixture(scope="module")
def prompt_server(tmp_path_factory):
    """A server whose text-to-image model is a tiny random FLUX pipeline (``models random t2i``)."""
    pytest.importorskip("diffusers")
    from meshforge.t2i.random_pipeline import write_random_t2i

    root = tmp_path_factory.mktemp("prompt")
    model = write_random_t2i(root / "tiny-t2i")
    yield from start_service(root / "data", "--backend", "inflate", env={"MESHFORGE_SERVICE_T2I_MODEL": str(model)})


@pytest.mark.slow  # a third server, the text-to-image model loaded, one job in a software-rendered browser
def test_studio_prompt_box_makes_a_picture_and_shows_the_outcome(prompt_server, browser):
    page, errors = open_studio(browser, prompt_server)
    page.fill("input[name=resolution]", "32")
    page.fill("input[name=faces]", "500")
    page.fill("#prompt", "a wooden chair")
    page.evaluate(
        "window.__inputLoads = 0;"
        " document.getElementById('input-image').addEventListener('load', () => window.__inputLoads++)"
    )
    page.click("#prompt-form button[type=submit]")
    page.wait_for_selector(".job .name:text('a wooden chair')", timeout=20_000)
    page.locator(".job").first.click()
    page.wait_for_function(
        "['succeeded', 'failed'].includes(document.querySelector('.job.selected .state')?.textContent)",
        timeout=90_000,
    )
    state = page.locator(".job.selected .state").inner_text().lower()
    size = page.wait_for_function(
        "(() => { const i = document.getElementById('input-image');"
        " return i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null; })()",
        timeout=20_000,
    ).json_value()
    assert size == [64, 64]  # the tiny model's picture, shown beside the viewer
    # the job's later updates (its end) keep the picture on screen: loaded once, never blanked and reloaded
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__inputLoads") == 1
    assert page.locator("#input-caption").inner_text() == "generated picture"
    page.screenshot(path=str(ARTIFACTS / "studio_prompt.png"))
    if state == "failed":  # random weights make noise: refused like any picture with no object, in one line
        error = page.locator(".job.selected .error").inner_text()
        assert "no object" in error and "\n" not in error
        assert "no object" in page.locator("#viewer-note").inner_text()
    else:
        page.wait_for_timeout(500)
        assert object_fraction(canvas_pixels(page)) > 0.01
    assert page.locator("#prompt").input_value() == ""  # ready for the next prompt
    assert not errors, errors
    page.close()
