"""End to end: report.html opened in headless Chromium has no console errors, a non-blank heatmap, and a results
table that passes an accessibility check of table semantics and contrast (an equivalent of axe-core's
`td-has-header`, `scope-attr-valid` and `color-contrast` rules, done in Python over the rendered DOM).
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
        check_matrix_accessibility(driver)
    finally:
        driver.quit()


MATRIX_DOM = """
const t = document.getElementById('matrix-table');
const cols = [...t.tHead.rows[0].cells].map(c => [c.tagName, c.getAttribute('scope'), c.innerText]);
const rows = [...t.tBodies[0].rows].map(r => {
  const h = r.cells[0];
  return {head: [h.tagName, h.getAttribute('scope'), h.innerText], cells: [...r.cells].slice(1).map(c => {
    const text = c.querySelector('a') || c;
    return {tag: c.tagName, bg: getComputedStyle(c).backgroundColor, fg: getComputedStyle(text).color,
            shown: (c.querySelector('a') || c).childNodes[0].textContent, title: c.title};
  })};
});
return {caption: t.caption ? t.caption.innerText : '', cols: cols, rows: rows,
        heatmapLabel: document.getElementById('heatmap').getAttribute('aria-label')};
"""


def _rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(float(x)) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r, g, b


def check_matrix_accessibility(driver) -> None:
    """Every data cell has a column header and a row header by `scope`, the table has a caption, the heatmap
    a text alternative, and every cell's rendered text colour contrasts >= 4.5:1 with its rendered background."""
    from lifelong.report.html import contrast

    dom = driver.execute_script(MATRIX_DOM)
    assert dom["caption"] and dom["heatmapLabel"]
    assert all(tag == "TH" and scope == "col" and text.strip() for tag, scope, text in dom["cols"])
    for row in dom["rows"]:
        tag, scope, text = row["head"]
        assert tag == "TH" and scope == "row" and text.strip()
        assert len(row["cells"]) == len(dom["cols"]) - 1  # each data cell sits under a column header
        for c in row["cells"]:
            assert c["tag"] == "TD" and c["title"].startswith("95% CI")
            assert contrast(_rgb(c["bg"]), _rgb(c["fg"])) >= 4.5, c
