"""The ``/dashboard`` page in a real headless Chromium, against a real gateway and simulated fleet with load.

Playwright drives the system Chromium (Debian package ``chromium``); no browser is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from playwright.sync_api import Page, sync_playwright

from harness import Harness

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = (
    "chart-carbon-region", "chart-carbon-department", "chart-carbon-model", "chart-intensity",
    "chart-routing", "chart-avoided", "chart-kv", "chart-energy-per-token", "chart-buffer",
)  # fmt: skip
KEYS = {"research": "sk-research-test", "support": "sk-support-test"}


def demo_config(**telemetry: Any) -> dict[str, Any]:
    """The embedded demo, zero-delay, with two departments' keys (and optional telemetry settings)."""
    text = resources.files("bauxite").joinpath("data/demo.yaml").read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text)
    config["fleet"]["time_scale"] = 0.0
    config["auth"] = {
        "allow_anonymous": True,
        "keys": [
            {"department": dept, "sha256": hashlib.sha256(key.encode()).hexdigest()}
            for dept, key in KEYS.items()
        ],
    }
    if telemetry:
        config["telemetry"] = telemetry
    return config


def send_traffic(base_url: str) -> None:
    for dept, key in KEYS.items():
        client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            for _ in range(3):
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "system", "content": "You are terse. " * 40},
                              {"role": "user", "content": f"Hello from {dept}"}],
                    max_tokens=16,
                )  # fmt: skip


@pytest.fixture(scope="module")
def browser_page() -> Iterator[Page]:
    assert CHROMIUM, "headless Chromium is required: apt-get install chromium (see .ci/system-packages.txt)"
    with sync_playwright() as pw:
        # --no-sandbox: CI and this test machine run as root, where Chromium's sandbox refuses to start.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def get_json(url: str, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def total_carbon_g(data: dict[str, Any]) -> float:
    """Every gram since start: requests' carbon plus the clusters' idle carbon."""
    since = data["since_start"]
    return float(sum(since["carbon_g_by_region"].values()) + sum(since["idle_carbon_g_by_region"].values()))


def painted_pixels(page: Page, chart_id: str) -> int:
    """Pixels of the chart's canvas that are not transparent or white: lines, axes and labels drawn."""
    count: int = page.evaluate(
        """(id) => {
            const canvas = document.querySelector('#' + id + ' canvas');
            const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < px.length; i += 4) {
                if (px[i + 3] > 0 && !(px[i] > 245 && px[i + 1] > 245 && px[i + 2] > 245)) n++;
            }
            return n;
        }""",
        chart_id,
    )
    return count


def test_dashboard_renders_charts_and_figures(browser_page: Page, tmp_path: Path) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with Harness(demo_config()) as gw:
        send_traffic(gw.base_url)
        gw.wait_records(12)
        before = total_carbon_g(get_json(gw.base_url + "/dashboard/series"))
        page.goto(gw.base_url + "/dashboard")
        page.wait_for_selector("#chart-buffer canvas", timeout=30_000)
        after = total_carbon_g(get_json(gw.base_url + "/dashboard/series"))
        for chart in CHARTS:
            assert page.locator(f"#{chart} canvas").count() >= 1, chart
        # Figures on the page equal the gateway's totals (the page prints 3 significant figures). The total
        # also counts the metered clusters' idle carbon, which grows at every power scrape: the page's figure
        # lies between the totals read just before and just after it loaded.
        assert before > 0
        shown = page.locator('[data-value="total-carbon"]').inner_text()
        number, unit = shown.split()
        shown_g = float(number) * {"g": 1, "kg": 1e3, "t": 1e6}[unit]
        assert before * (1 - 5e-3) <= shown_g <= after * (1 + 5e-3)
        depts = page.locator("table", has_text="CO2e by department").inner_text()
        assert "research" in depts and "support" in depts
        assert "threshold" in page.locator("#chart-intensity").inner_text()
        # Avoided carbon is shown net (gross minus what routing added), with both parts named.
        series = get_json(gw.base_url + "/dashboard/series")["since_start"]
        net_g = sum(series["avoided_g_by_source"].values()) - sum(series["added_g_by_source"].values())
        card = page.locator("#avoided").inner_text()
        assert "gross" in card and "added" in card, card
        number, unit = page.locator('[data-value="avoided"]').inner_text().split()
        assert float(number) * {"g": 1, "kg": 1e3, "t": 1e6}[unit] == pytest.approx(net_g, rel=5e-3, abs=1e-3)
        routed = page.locator('[data-value="decisions"]').inner_text()
        assert int(routed) == 12
        for chart in ("chart-carbon-region", "chart-carbon-department", "chart-intensity"):
            assert painted_pixels(page, chart) > 500, chart
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
    assert errors == []
    assert_not_blank(shot)


def assert_not_blank(png: Path) -> None:
    from PIL import Image  # Pillow comes with matplotlib, a test dependency

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        width, height = image.size
    assert width >= 1000 and height >= 800
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"
    most = max(count for count, _ in colours)
    assert most < 0.9 * width * height, "one colour covers 90% of the screenshot"


def test_dashboard_data_needs_the_telemetry_token(
    browser_page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAUXITE_TEST_TELEMETRY_TOKEN", "s3cret-token")
    with Harness(demo_config(token_env="BAUXITE_TEST_TELEMETRY_TOKEN")) as gw:
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(gw.base_url + "/dashboard/series")
        assert refused.value.code == 401
        assert get_json(gw.base_url + "/dashboard/series", "s3cret-token")["bucket_s"] == 10
        page = browser_page
        page.goto(gw.base_url + "/dashboard")
        page.wait_for_selector("#token-form:not([hidden])", timeout=30_000)
        assert page.locator("#content").is_hidden()
        page.fill("#token", "s3cret-token")
        page.click("#token-form button")
        page.wait_for_selector("#chart-carbon-region canvas", timeout=30_000)
        assert page.locator("#token-form").is_hidden()
