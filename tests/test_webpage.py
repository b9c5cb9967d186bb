"""The web page (`GET /app`) in a real headless browser: Debian's chromium, driven by Playwright.

Needs the apt packages `chromium` (and the fonts it pulls in); without /usr/bin/chromium the test skips.
The screenshot is kept as a test artifact in test-artifacts/webpage.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_service import live_service
from tests.tiny_bundle import write_tiny_bundle
from tweetbot.runtime import bundle

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install chromium"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webpage")
    path = write_tiny_bundle(folder / "export")
    with live_service(path, folder / "service.log") as url:
        yield url, bundle.load(path).version


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_the_page_shows_posts_on_load_and_on_the_button(service, page):
    url, version = service
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{url}/app")
    # A post on load: the model version appears with it.
    page.wait_for_function("document.getElementById('model-version').textContent !== '…'")
    assert page.text_content("#model-version") == version
    assert page.get_attribute("#post", "class") == ""

    page.fill("#prime", "The fox")
    page.fill("#temperature", "0.5")
    page.click("#new-post")
    page.wait_for_function("document.getElementById('post').textContent.startsWith('The fox')")
    assert page.get_attribute("#post", "class") == ""

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "webpage.png", full_page=True)

    page.fill("#prime", "€uro")
    page.click("#new-post")
    page.wait_for_selector("#post.error")
    assert "prime" in page.text_content("#post") and "€" in page.text_content("#post")
