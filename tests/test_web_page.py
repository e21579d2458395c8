"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright; no browser download).

CI needs: apt-get install -y chromium   (and the `playwright` Python package; never `playwright install`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentiment_lab.predictor import Predictor
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.settings import ServerSettings

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` (or set CHROMIUM_PATH)",
        allow_module_level=True,
    )

from test_server_uvicorn import uvicorn_thread  # noqa: E402 (after the skip: it needs nothing extra)

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> terrible'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        # Playwright adds --no-sandbox (needed as root in containers) since its chromium sandbox is off by default
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def echo_model(texts: list[str]) -> list[dict[str, Any]]:
    """A fake model that puts the review itself into the label: any unsafe rendering of it would run."""
    return [{"label": t, "score": 0.55, "prob_pos": 0.45, "needs_review": True} for t in texts]


def echo_explain(text: str) -> dict[str, Any]:
    return {"label": "NEGATIVE", "prob_pos": 0.45, "words": [{"text": w, "score": -0.5} for w in text.split()]}


def test_type_a_review_click_predict_and_see_the_label(browser: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor.load(tiny_model_dir)
    expected = predictor.predict(["An absolutely wonderful film, moving and funny."])[0]
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    external: list[str] = []
    with uvicorn_thread(app) as (url, _):
        page = browser.new_page(viewport={"width": 900, "height": 800})
        page.on("request", lambda r: None if r.url.startswith(url) else external.append(r.url))
        page.goto(url + "/")
        sync_api.expect(page.locator("#explain-toggle")).to_be_visible()  # /v1/model answered: explain offered
        page.fill("#review", "An absolutely wonderful film, moving and funny.")
        page.click("#predict")
        sync_api.expect(page.locator("#label")).to_have_text(expected["label"])
        sync_api.expect(page.locator("#highlights-section")).to_be_visible()
        confidence = page.locator("#confidence").inner_text()
        width = page.locator("#bar-fill").evaluate("e => e.style.width")
        flag_visible = page.locator("#needs-review").is_visible()
        n_words = page.locator("#highlights .tok").count()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        page.close()
    assert f"{round(expected['score'] * 100, 1)}% confidence" in confidence
    assert width == f"{round(expected['score'] * 1000) / 10}%"
    assert flag_visible == expected["needs_review"]
    assert n_words > 0
    assert external == []  # every asset comes from the server itself: no CDN
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_script_in_a_review_is_shown_as_text_and_never_runs(browser: Any) -> None:
    app = create_app(echo_model, ServerSettings(max_wait_ms=0), {"model_dir": "echo"}, echo_explain)
    with uvicorn_thread(app) as (url, _):
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "/")
        sync_api.expect(page.locator("#explain-toggle")).to_be_visible()
        page.fill("#review", HOSTILE)
        page.click("#predict")
        sync_api.expect(page.locator("#label")).to_have_text(HOSTILE)  # the markup, verbatim, as text
        sync_api.expect(page.locator("#highlights-section")).to_be_visible()
        page.wait_for_timeout(300)  # give an injected onerror handler time to fire, if one existed
        pwned = page.evaluate("window.__pwned")
        injected = page.locator("#result script, #result img, #highlights script, #highlights img").count()
        highlight_text = page.locator("#highlights").inner_text()
        flag_visible = page.locator("#needs-review").is_visible()
        page.close()
    assert pwned is None and dialogs == []
    assert injected == 0
    assert "<script>window.__pwned" in highlight_text
    assert flag_visible  # needs_review is shown


def test_the_page_asks_for_the_api_key_when_the_server_needs_one(browser: Any) -> None:
    app = create_app(echo_model, ServerSettings(max_wait_ms=0, api_key="page-key"), {"model_dir": "echo"})
    with uvicorn_thread(app) as (url, _):
        page = browser.new_page()
        page.goto(url + "/")
        sync_api.expect(page.locator("#key-row")).to_be_visible()  # /v1/model answered 401
        page.fill("#review", "a fine film")
        page.fill("#api-key", "wrong")
        page.click("#predict")
        sync_api.expect(page.locator("#error")).to_contain_text("401")
        page.fill("#api-key", "page-key")
        page.click("#predict")
        sync_api.expect(page.locator("#label")).to_have_text("a fine film")
        error_hidden = page.locator("#error").is_hidden()
        page.close()
    assert error_hidden
