"""End to end in a real browser: view.py's server on 127.0.0.1 with a tiny trained model, opened in
headless Chromium (Debian's ``chromium``; WebGL through SwiftShader, no GPU). Checks that the splats
are drawn (the scene area of the screenshot is not blank, and is blank once the splats are hidden)
and that a click on the page picks a Gaussian on the server and the panel shows it.

Driven by selenium + ``chromedriver`` when both are installed, else by ``chromium --screenshot``
(splats only, no click). Skipped only when no Chromium is installed (.ci/run installs it).
"""
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium "
                                                          "chromium-driver)")
W, H = 1000, 700
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader", f"--window-size={W},{H}"]
WAIT_S = 40.0  # the splats must be on the page within this


@pytest.fixture(scope="module")
def trained_model(tiny_scene, tmp_path_factory):
    """A model train.py wrote for the tiny scene: its folder, PLY with labels, cameras.json and cfg_args
    are the real thing; 3 iterations keep the initial opacity (a longer tiny run resets it to 0.01 and
    the page would look empty), enough points to cover the view."""
    import train

    out = str(tmp_path_factory.mktemp("viewer_browser") / "model")
    train.training(train.prepare_args(["-s", tiny_scene, "-m", out, "--iterations", "3", "--test_iterations", "-1",
                                       "--quiet", "--init_points", "20000"]))
    return out


def scene_share(png_path: str) -> tuple:
    """(share of non-background pixels, their std) in the scene area of a screenshot: the middle of
    the page, left of viser's control panel and clear of its notifications and axes gizmo."""
    from PIL import Image

    img = np.asarray(Image.open(png_path).convert("RGB")).astype(np.float32)
    h, w = img.shape[:2]
    area = img[int(0.3 * h):int(0.85 * h), int(0.15 * w):int(0.6 * w)]  # [h', w', 3]
    ink = np.abs(area - 255.0).max(-1) > 24  # viser's canvas background is white
    return float(ink.mean()), float(area.std())


def _driver(user_dir: str):
    """A selenium Chrome driver on Debian's chromium, or None without selenium / chromedriver."""
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if driver_path is None:
        return None
    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={user_dir}"]:
        opts.add_argument(f)
    return webdriver.Chrome(options=opts, service=Service(driver_path))  # local binary: no download


def _wait(cond, timeout: float, step: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    return cond()


def test_viewer_in_headless_chromium(trained_model, tmp_path):
    from viewer.app import Viewer, start_server
    from viewer.data import load_viewer_data

    data = load_viewer_data(trained_model)
    assert data.labels is not None and data.cameras  # a trained model: ids and training views
    server = start_server("127.0.0.1", 0)
    viewer = Viewer(data, server)
    url = f"http://127.0.0.1:{server.get_port()}/"
    shot = str(tmp_path / "viewer.png")
    driver = None
    try:
        driver = _driver(str(tmp_path / "chrome-profile"))
        if driver is None:  # the command line: one screenshot after the page had time to load
            subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chrome-cli'}",
                            "--virtual-time-budget=20000", f"--screenshot={shot}", url],
                           check=True, capture_output=True, timeout=90)
            share, std = scene_share(shot)
            assert share > 0.05 and std > 10, (share, std)
            return
        driver.set_window_size(W, H)
        driver.get(url)

        def drawn():
            driver.save_screenshot(shot)
            share, std = scene_share(shot)
            return (share, std) if share > 0.05 and std > 10 else None

        t0 = time.time()
        assert _wait(drawn, WAIT_S), f"no splats on the page after {WAIT_S:.0f} s: {scene_share(shot)}"
        print(f"splats drawn after {time.time() - t0:.1f} s; scene area {scene_share(shot)}")
        # a click in the middle of the scene: the browser sends the ray, the server picks and says so
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        canvas = max(driver.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
        ActionChains(driver).move_to_element_with_offset(canvas, -0.1 * canvas.size["width"], 0).click().perform()
        assert _wait(lambda: viewer.picked_gaussian is not None, 15.0), "the click picked nothing"
        first = viewer.info_text.splitlines()[0]
        assert _wait(lambda: first in driver.page_source, 10.0), f"the panel does not show {first!r}"
        # with the splats (and frusta) hidden the same area is blank: what was drawn was the splats
        viewer.splats.visible = False
        viewer.camera_root.visible = False
        assert _wait(lambda: (driver.save_screenshot(shot), scene_share(shot)[0] < 0.01)[1], 15.0), scene_share(shot)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
