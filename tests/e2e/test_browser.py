"""End to end in headless Chromium: the real backend on two tiny checkpoints, the Streamlit
app, and a browser clicking through it. Screenshots land in test-artifacts/.

    .venv/bin/python -m pytest tests/e2e -m e2e

Needs /usr/bin/chromium (scripts/install_chromium.sh); skipped with that reason without it.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request

import pytest

from .conftest import ARTIFACTS, start_backend

pytestmark = pytest.mark.e2e


# --- helpers -------------------------------------------------------------------------------
def api(backend, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(backend.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def seq(digits) -> str:
    return " ".join(str(d) for d in digits) if digits else "(empty)"


def settle(page) -> None:
    """Wait until Streamlit has finished the current run (its status widget, with the Stop
    button, is shown only while a script runs) and the charts have drawn."""
    page.wait_for_timeout(400)
    for _ in range(2):  # twice: a rerun may start just after the first one ends
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
            timeout=90_000)
        page.wait_for_timeout(400)
    page.wait_for_function(  # every chart on the page has drawn its SVG
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".every(c => c.querySelector('.main-svg'))", timeout=30_000)
    page.wait_for_timeout(300)


def wait_count(page, selector: str, at_least: int = 1, timeout: int = 60_000) -> int:
    """Wait until `selector` matches at least `at_least` elements (Streamlit renders
    dataframes and images a moment after the script run ends), then count them."""
    page.locator(selector).nth(at_least - 1).wait_for(state="attached", timeout=timeout)
    return page.locator(selector).count()


def open_app(page, url: str, heading: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=heading, exact=True).wait_for()
    settle(page)
    assert_no_exception(page)


def assert_no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def choose(page, label: str, option: str | re.Pattern) -> None:
    """Pick `option` in the selectbox or multiselect labelled `label`."""
    widget = page.locator('[data-testid="stSelectbox"], [data-testid="stMultiSelect"]').filter(
        has=page.get_by_text(label, exact=True))
    widget.locator('[role="combobox"], input').first.click()
    page.get_by_role("option", name=option).first.click()
    settle(page)


def svg_texts(locator) -> list[str]:
    """Texts of SVG elements (they have no innerText)."""
    return locator.evaluate_all("els => els.map(e => e.textContent)")


def legend_names(page, chart: int = 0) -> list[str]:
    return svg_texts(page.locator(".js-plotly-plot").nth(chart).locator(".legendtext"))


def legend_entry(page, name: str, chart: int = 0):
    """The legend entry `name` of a chart, to wait for: plotly redraws after Streamlit."""
    return page.locator(".js-plotly-plot").nth(chart).locator(".legendtext", has_text=name)


# --- tests ---------------------------------------------------------------------------------
def test_explore_generated_sample(page, backend, frontend):
    open_app(page, frontend.url, "Explore motifs")
    page.get_by_label("Seed", exact=True).fill("7")
    page.get_by_label("Seed", exact=True).press("Enter")
    sample = api(backend, "/v1/samples/7")
    expected = api(backend, "/v1/models/tiny-a/analysis", {"seed": 7})
    page.get_by_text(re.compile(f"(Ground truth is|Matches the ground truth) "
                                f"{re.escape(seq(sample['label']))}")).wait_for()
    settle(page)
    shot(page, "01-explore-sample")
    assert_no_exception(page)

    assert wait_count(page, '[data-testid="stDataFrame"]', 2) >= 2  # confidences, motifs
    page.get_by_text(f"{len(sample['motifs'])} motifs:").first.wait_for()
    page.get_by_text("Channel-to-symbol assignment").first.wait_for()
    text = main_text(page)
    assert seq(expected["tokens"]) in text  # the decoded sequence, as the backend decodes
    assert f"{len(sample['motifs'])} motifs:" in text
    # the overlay: one legend entry per active channel, one labelled box per digit
    plot = page.locator(".js-plotly-plot").first
    plot.locator(".legendtext").first.wait_for()
    names = legend_names(page)
    assert any(n.startswith("ch ") for n in names), names
    labels = svg_texts(plot.locator(".annotation-text"))
    assert len(labels) == len(sample["motifs"])
    assert all(re.match(r"\d: (hit|missed|confused)", t) for t in labels), labels
    assert wait_count(page, ".js-plotly-plot .scatterlayer .point") > 0
    assert "Channel-to-symbol assignment" in text
    # every channel toggle is tinted: its border is its channel's colour, not the theme's
    pills = page.locator('.st-key-explore_channels_10 [data-testid="stButtonGroup"] button')
    assert pills.count() >= 10
    borders = {pills.nth(i).evaluate("b => getComputedStyle(b).borderTopColor")
               for i in range(pills.count())}
    assert len(borders) >= 5, borders


def test_explore_uploaded_png(page, backend, frontend, tmp_path):
    sample = api(backend, "/v1/samples/3")
    png = tmp_path / "digits.png"
    png.write_bytes(base64.b64decode(sample["png_base64"]))
    expected = api(backend, "/v1/models/tiny-a/activations", {"image": sample["image"]})

    open_app(page, frontend.url, "Explore motifs")
    page.get_by_text("Upload an image", exact=True).click()
    page.get_by_text("Upload an image to see its motifs").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(png))
    page.get_by_text("Uploads have no ground truth").wait_for()
    settle(page)
    assert_no_exception(page)
    text = main_text(page)
    assert seq(expected["sequence"]) in text
    assert f"{expected['n_active']:,}".replace(",", "") in text.replace(",", "")
    assert wait_count(page, ".js-plotly-plot .scatterlayer .point") > 0
    shot(page, "02-explore-upload")


def test_channel_page(page, backend, frontend):
    open_app(page, frontend.url + "/channels", "Channels")
    choose(page, "Channel", re.compile(r"^Channel 2\b"))
    expected = api(backend, "/v1/models/tiny-a/channels/2?wait=60")
    page.get_by_text("Top-activating crops").wait_for()
    settle(page)
    assert_no_exception(page)
    metrics = page.locator('[data-testid="stMetric"]').all_inner_texts()
    assert any("Aligned symbol" in m and str(expected["symbol"]) in m for m in metrics), metrics
    assert len(expected["top_crops"]) > 0
    shown = sum(len(expected[k]) for k in ("top_crops", "middle_crops", "outside_crops"))
    assert wait_count(page, '[data-testid="stImage"]', shown) == shown
    assert page.locator('a[href*="seed="]').count() >= shown  # each crop links to Explore
    assert wait_count(page, ".js-plotly-plot .bars path") > 0  # the value histogram
    shot(page, "03-channels")


def test_intervention_changes_the_decoding(page, backend, frontend):
    open_app(page, frontend.url + "/intervene", "Intervene on the motif map")
    # waited for, not read at once: on a loaded machine the page's last elements (the "After"
    # column and this note) can come after settle() saw the script end
    page.get_by_text(re.compile("^Nothing edited yet")).wait_for(timeout=60_000)
    assert "Nothing edited yet" in main_text(page)
    # remove the strongest motif
    widget = page.locator('[data-testid="stMultiSelect"]').filter(
        has=page.get_by_text("Remove active motifs", exact=True))
    widget.locator("input").first.click()
    option = page.get_by_role("option", name=re.compile(r"^ch \d+")).first
    label = option.inner_text()
    option.click()
    page.keyboard.press("Escape")
    settle(page)
    chosen = re.match(r"ch (\d+)(?: → \S+)? at \((\d+), (\d+)\)", label)
    assert chosen, label
    channel, row, col = map(int, chosen.groups())
    expected = api(backend, "/v1/models/tiny-a/intervene",
                   {"seed": 0, "remove": [{"channel": channel, "row": row, "col": col}]})
    page.get_by_text("After the edit").wait_for()
    page.get_by_text(re.compile("The decoded sequence (changed|did not change)")).first.wait_for(
        timeout=60_000)
    assert expected["removed"] == 1
    text = main_text(page)
    assert seq(expected["after"]["sequence"]) in text
    assert re.search("The decoded sequence (changed|did not change)", text)
    legend_entry(page, "removed").wait_for()
    assert "removed" in legend_names(page)

    # plant a motif as well
    page.get_by_text("Add motifs", exact=True).click()
    settle(page)
    page.get_by_label("Value", exact=True).fill("5")
    page.get_by_label("Value", exact=True).press("Enter")
    settle(page)
    page.get_by_role("button", name=re.compile("Add this motif")).click()
    settle(page)
    assert_no_exception(page)
    legend_entry(page, "added").wait_for()
    assert "added" in legend_names(page)
    assert "Token by token" in main_text(page)
    assert "ground truth" in legend_names(page)  # the sample's boxes are on the map
    shot(page, "04-intervene")


@pytest.mark.parametrize("path, heading, must_show", [
    ("/alignment", "Alignment with the ground truth", "Metrics vs the paper"),
    ("/training", "Training curves", "Samples seen"),
    ("/compare", "Compare two checkpoints", "Checkpoint B"),
])
def test_other_pages_render(page, frontend, path, heading, must_show):
    open_app(page, frontend.url + path, heading)
    page.locator(".js-plotly-plot").first.wait_for()
    settle(page)
    assert must_show in main_text(page)
    if path == "/compare":
        assert wait_count(page, ".js-plotly-plot", 2) == 2
    shot(page, f"05-{path.strip('/')}")


# --- issue 17: default model, shareable state, honest decodes, exports -------------------
def sidebar_model(page) -> str:
    """The full label of the checkpoint shown (the caption under the sidebar picker)."""
    caption = page.locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]',
                           has_text="Showing:").first
    caption.wait_for()
    return caption.inner_text()


def test_opens_on_the_default_model(page, checkpoints):
    from .conftest import free_port, start_frontend

    server = start_backend(checkpoints, free_port(), name="backend-default",
                           SPARLING_DEFAULT_MODEL="tiny-b")
    app = None
    try:
        assert api(server, "/v1/models")["default"] == "tiny-b"
        app = start_frontend(server.url, free_port(), name="frontend-default")
        open_app(page, app.url, "Explore motifs")
        settle(page)
        assert "tiny-b" in sidebar_model(page)
        assert "model=tiny-b" in page.url
        shot(page, "07-default-model")
    finally:
        if app is not None:
            app.stop()
        server.stop()


def test_url_state_round_trip(page, backend, frontend):
    """/?model=tiny-b&seed=7 opens Explore on tiny-b with seed 7; a reload keeps it; a new
    seed is written back to the URL, and the copyable link says so."""
    open_app(page, frontend.url + "/?model=tiny-b&seed=7", "Explore motifs")
    settle(page)
    assert "tiny-b" in sidebar_model(page)
    assert page.get_by_label("Seed", exact=True).input_value() == "7"
    sample = api(backend, "/v1/models/tiny-b/samples/7")
    page.get_by_text(re.compile(f"(Ground truth is|Matches the ground truth) "
                                f"{re.escape(seq(sample['label']))}")).wait_for()
    page.reload()
    page.get_by_role("heading", name="Explore motifs").wait_for()
    settle(page)
    assert "tiny-b" in sidebar_model(page)
    assert page.get_by_label("Seed", exact=True).input_value() == "7"
    page.get_by_label("Seed", exact=True).fill("9")
    page.get_by_label("Seed", exact=True).press("Enter")
    settle(page)
    page.wait_for_function("() => window.location.search.includes('seed=9')")
    assert "model=tiny-b" in page.url and "seed=9" in page.url
    # the sidebar's link is redrawn when the run ends, a moment after the address bar
    code = page.locator('[data-testid="stSidebar"] [data-testid="stCode"]', has_text="seed=9")
    code.first.wait_for(timeout=60_000)
    link = code.first.inner_text()
    assert "model=tiny-b" in link and "seed=9" in link
    shot(page, "08-url-state")
    assert_no_exception(page)


def test_padded_upload_warns_and_shows_the_baseline(page, backend, frontend, tmp_path):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("L", (60, 40), 0).save(small)  # blank, and not the model's size
    open_app(page, frontend.url, "Explore motifs")
    page.get_by_text("Upload an image", exact=True).click()
    page.get_by_text("Upload an image to see its motifs").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(small))
    page.get_by_text("Uploads have no ground truth").wait_for()
    settle(page)
    text = main_text(page)
    assert "The image was 40x60; it was padded" in text
    assert "for an empty map the decoder answers" in text
    shot(page, "09-honest-decode")
    assert_no_exception(page)


def test_exports_and_input_warnings(page, backend, frontend, tmp_path):
    open_app(page, frontend.url + "/?seed=3", "Explore motifs")
    settle(page)
    page.get_by_text("Export", exact=True).click()
    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile("Activations \\(JSON\\)")).click()
    path = tmp_path / "activations.json"
    download.value.save_as(path)
    exported = json.loads(path.read_text())
    assert exported["activations"] == api(backend, "/v1/models/tiny-a/activations", {
        "image": api(backend, "/v1/models/tiny-a/samples/3")["image"]})["activations"]
    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile("Figure \\(PNG\\)")).click()
    png = tmp_path / "figure.png"
    download.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a file the service refuses: an input warning naming the control, no Retry button
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    page.get_by_text("Upload an image", exact=True).click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(bad))
    page.get_by_text("Check the uploaded file").wait_for()
    settle(page)
    assert page.get_by_role("button", name="Retry").count() == 0
    shot(page, "10-input-warning")


def test_backend_down_is_reported_then_recovers(page, backend, frontend, checkpoints):
    """Runs last: stops the module's backend, then brings one up on the same port."""
    open_app(page, frontend.url, "Explore motifs")
    backend.stop()
    page.reload()
    settle(page)
    # answers already cached are still shown; forgetting them makes the app ask again
    page.get_by_role("button", name="Refresh data").click()
    alert = page.locator('[data-testid="stAlertContentError"]').first
    alert.wait_for()
    message = alert.inner_text()
    assert f"Cannot reach the backend at {backend.url}" in message
    assert "Backend URL" in message
    assert_no_exception(page)
    shot(page, "06-backend-down")

    revived = start_backend(checkpoints, backend.port, name="backend-restarted")
    try:
        page.get_by_role("button", name="Retry").click()
        page.locator(".js-plotly-plot").first.wait_for()
        settle(page)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        assert_no_exception(page)
    finally:
        revived.stop()

