"""The search page in a real headless Chromium (Selenium) over the session's running service (conftest's
`client`): upload a sample video, see ranked hits with their timelines, a text search, a refused upload.

Skips only when no Chromium binary or chromedriver is installed (`apt-get install chromium chromium-driver`; CI's
`.ci/run` installs them).  The results page is saved as web_page.png under the session's temporary folder, and
also at $WEB_PAGE_SCREENSHOT when set (`WEB_PAGE_SCREENSHOT=docs/web_page.png` refreshes the README's picture).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import VIDEOS
from dnsvr.serving.web.uploads import UploadLimit
from web_page_server import StandInClient, running_page

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
QUERY = VIDEOS / "pattern-sd-with-small-logo-bar.mp4"
WAIT_S = 120


def chromium_and_driver() -> tuple[str, str] | None:
    """Paths of a Chromium binary and chromedriver found on PATH, or None."""
    binary = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="module")
def browser():
    found = chromium_and_driver()
    if found is None:
        pytest.skip("no Chromium binary and chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(client, indexed):
    with running_page(client, UploadLimit.from_megabytes(8)) as url:
        yield url


def visible(browser, selector: str):
    """Wait until an element matching the CSS `selector` is displayed; returns it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def upload(browser, path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "video-file").send_keys(str(path))


def test_upload_shows_ranked_hits_with_timelines(browser, page, tmp_path_factory):
    from selenium.webdriver.common.by import By

    browser.get(page)
    rerank = browser.find_element(By.ID, "rerank")
    rerank.clear()
    rerank.send_keys("1.0")  # every candidate to the fine student: the re-ranked column says yes
    upload(browser, QUERY)
    first = visible(browser, "#hits tr.hit")
    rows = browser.find_elements(By.CSS_SELECTOR, "#hits tr.hit")
    ids = [row.find_element(By.CSS_SELECTOR, ".video-id").text for row in rows]
    assert ids[0].startswith("pattern"), ids
    assert "yes" in [row.find_element(By.CSS_SELECTOR, ".badge").text for row in rows]
    assert first.find_element(By.CSS_SELECTOR, ".hit-timeline .track").is_displayed()
    assert visible(browser, "#query-timeline .track").is_displayed()
    assert visible(browser, "#filmstrip img").get_attribute("naturalWidth") != "0"  # a decoded query frame
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#hits tr.hit td.thumb img")  # stored at indexing
    assert len(thumbnails) == len(rows) and all(image.get_attribute("naturalWidth") == "112" for image in thumbnails)
    segments = browser.find_elements(By.CSS_SELECTOR, "#hits tr.hit:first-child .segment")  # re-ranked: located
    assert segments and all(bar.is_displayed() for bar in segments)
    assert " videos" in browser.find_element(By.ID, "stats").text
    screenshot = tmp_path_factory.getbasetemp() / "web_page.png"
    assert browser.save_screenshot(str(screenshot))
    if os.environ.get("WEB_PAGE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["WEB_PAGE_SCREENSHOT"])


def test_segments_are_drawn_as_bars(browser):
    """A stand-in client's hit with a segment (query 1-3 s of the upload, target 0-2 s): a bar on each track."""
    from selenium.webdriver.common.by import By

    with running_page(StandInClient(), UploadLimit.from_megabytes(8)) as url:
        browser.get(url)
        upload(browser, VIDEOS / "doorknob-hd-no-bar.mp4")
        visible(browser, "#hits tr.hit")
        bars = browser.find_elements(By.CSS_SELECTOR, "#hits tr.hit:first-child .segment")
        assert len(bars) == 2 and all(bar.is_displayed() for bar in bars)
        assert bars[1].get_attribute("style").startswith("left: 0%; width: 100%")  # target: 0-2 s of 2 s
        assert visible(browser, "#query-timeline .segment").is_displayed()


def test_text_search_in_the_page(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page)
    browser.find_element(By.ID, "text-query").send_keys("a knitted fabric")
    browser.find_element(By.CSS_SELECTOR, "#text-form button").click()
    visible(browser, "#hits tr.hit")
    assert browser.find_element(By.CSS_SELECTOR, "#hits tr.hit .video-id").text.startswith("pattern")


def test_a_file_that_is_not_a_video_shows_an_error(browser, page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are notes, not a video\n" * 40)
    browser.get(page)
    upload(browser, notes)
    message = visible(browser, "#message.error")
    assert "not a video" in message.text
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    upload(browser, empty)
    visible(browser, "#message.error")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda driver: "empty" in driver.find_element("id", "message").text)
