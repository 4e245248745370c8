"""End to end: report.html opened in headless Chromium has no console errors and a non-blank heatmap.
Skipped cleanly when Chromium / ChromeDriver are missing (`.ci/run` installs Debian's chromium and
chromium-driver so CI runs it)."""

import io
import shutil
from pathlib import Path

import pytest

from lifelong.report.html import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver not installed"),
]


def test_report_renders_in_headless_chromium(tmp_path):
    pytest.importorskip("selenium")
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    run = tmp_path / "naive"
    shutil.copytree(Path(__file__).parent / "data" / "runs" / "naive", run)
    page = build_report(run)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        assert driver.title == "lifelong report: naive"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        heat = driver.find_element(By.CSS_SELECTOR, "#heatmap svg")
        assert heat.size["width"] > 200 and heat.size["height"] > 100
        driver.save_screenshot(str(tmp_path / "page.png"))
        img = Image.open(io.BytesIO(heat.screenshot_as_png)).convert("RGB")
        colours = img.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20  # drawn, not blank
        greenish = sum(n for n, (r, g, b) in colours if g > r + 40)
        assert greenish > 0.05 * img.width * img.height  # the coloured cells are there
        assert (tmp_path / "page.png").stat().st_size > 10_000
    finally:
        driver.quit()
