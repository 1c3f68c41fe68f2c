"""The playground in a real browser: Debian's chromium, headless, driven through its
chromedriver by Selenium, against `quantized dev` and its sandbox model.

Without chromium and chromedriver the test skips outside CI and fails in CI.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import _in_ci
from tests.e2e.dev_stack import DevStack, start_dev_stack

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SANDBOX_MODEL = "sandbox-image-1"
WAIT_SECONDS = 60
NO_WATERMARK_LINE = "No watermark: nothing in the file marks it as AI-generated; say so yourself where it matters."


def _browser_problem() -> str | None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing (Debian packages chromium and chromium-driver; .ci/run installs them)"
    return None


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[DevStack]:
    running = start_dev_stack(tmp_path_factory.mktemp("dev"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser(monkeypatch) -> Iterator[webdriver.Chrome]:
    problem = _browser_problem()
    if problem is not None:
        if _in_ci():
            pytest.fail(problem)
        pytest.skip(problem)
    # The driver and browser are given by path, so Selenium Manager has nothing to fetch;
    # offline it could not anyway.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1500",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _origin(dev: DevStack) -> str:
    return dev.base_url.removesuffix("/v1")


def _wait(driver: webdriver.Chrome, condition, message: str):
    return WebDriverWait(driver, WAIT_SECONDS).until(condition, message)


def _by_id(driver: webdriver.Chrome, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def _type(element: WebElement, text: str) -> None:
    element.clear()
    element.send_keys(text)


def _enter_key(driver: webdriver.Chrome, key: str) -> None:
    """The key typed into its field and submitted with Enter, as a keyboard user does."""
    field = _by_id(driver, "api-key")
    _type(field, key)
    field.send_keys(Keys.ENTER)


def _tab_to(driver: webdriver.Chrome, element_id: str, presses: int = 12) -> None:
    for _ in range(presses):
        if driver.switch_to.active_element.get_attribute("id") == element_id:
            return
        driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == element_id, f"Tab never reached #{element_id}"


def _api_error_message(dev: DevStack, key: str) -> str:
    response = httpx.get(f"{dev.base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 401
    return response.json()["error"]["message"]


def _api_generate(dev: DevStack, body: dict) -> dict:
    response = httpx.post(f"{dev.base_url}/images/generations", json=body,
                          headers={"Authorization": f"Bearer {dev.api_key}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_keyboard_user_generates_and_sees_images_watermarks_and_credits(dev, browser, tmp_path):
    browser.get(f"{_origin(dev)}/playground")
    assert browser.title == "Quantized playground"

    # A wrong key: the router's own message, in the alert region.
    wrong_key = "sk-quantized-not-a-key"
    _enter_key(browser, wrong_key)
    alert = _by_id(browser, "error")
    _wait(browser, lambda driver: alert.text.strip(), "no error shown for a wrong key")
    assert alert.get_attribute("role") == "alert"
    assert _api_error_message(dev, wrong_key) in alert.text and "HTTP 401" in alert.text
    assert _by_id(browser, "generate").get_attribute("disabled") is not None

    _enter_key(browser, dev.api_key)
    generate = _by_id(browser, "generate")
    _wait(browser, lambda driver: generate.is_enabled(), "the models never loaded")
    assert alert.text == ""
    model = Select(_by_id(browser, "model"))
    model.select_by_value(SANDBOX_MODEL)
    # Only what the sandbox accepts: seed and output_format, no quality.
    options = browser.find_elements(By.CSS_SELECTOR, "#model-option-fields [data-option]")
    assert sorted(element.get_attribute("name") for element in options) == ["output_format", "seed"]
    assert not _by_id(browser, "quality-field").is_displayed()
    assert [option.text for option in Select(_by_id(browser, "option-output_format")).options] == [
        "Provider default", "png", "jpeg", "webp"]
    labels = {label.get_attribute("for") for label in browser.find_elements(By.TAG_NAME, "label")}
    assert {"api-key", "model", "prompt", "size", "n", "option-seed", "option-output_format"} <= labels

    prompt = "a sleepy hedgehog under a mushroom"
    _type(_by_id(browser, "prompt"), prompt)
    _type(_by_id(browser, "size"), "320x240")
    _type(_by_id(browser, "n"), "2")
    # The same request through the API first: the page's credits must match its figures.
    api_answer = _api_generate(dev, {"model": SANDBOX_MODEL, "prompt": prompt, "size": "320x240", "n": 2})
    _tab_to(browser, "generate")
    browser.switch_to.active_element.send_keys(Keys.SPACE)

    _wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#images img")) == 2,
          "no images shown")
    _wait(browser, lambda driver: generate.is_enabled(), "Generate stayed disabled")
    assert browser.switch_to.active_element.get_attribute("id") == "results"
    assert _by_id(browser, "results").get_attribute("aria-live") == "polite"
    for index, image in enumerate(browser.find_elements(By.CSS_SELECTOR, "#images img"), start=1):
        natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
        assert natural == [320, 240]
        source = image.get_attribute("src")
        assert source.startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert (decoded.format, decoded.size) == ("PNG", (320, 240))
        decoded.verify()
        assert image.get_attribute("alt") == f"{prompt} (generated image {index} of 2)"
    watermarks = browser.find_elements(By.CSS_SELECTOR, "#images .watermark")
    assert [line.text for line in watermarks] == [NO_WATERMARK_LINE] * 2
    assert [line.get_attribute("data-watermark") for line in watermarks] == ["none", "none"]

    used = api_answer["usage"]["credits_used"]
    remaining = api_answer["usage"]["credits_remaining"] - used
    assert used > 0
    assert _by_id(browser, "credits-used").text == f"{used:,} micro-credits"
    assert _by_id(browser, "credits-remaining").text == f"{remaining:,} micro-credits"
    assert _by_id(browser, "credits-used").get_attribute("data-value") == str(used)
    assert _by_id(browser, "credits-remaining").get_attribute("data-value") == str(remaining)

    policy_violations = [entry["message"] for entry in browser.get_log("browser")
                         if "Content Security Policy" in entry["message"]]
    assert policy_violations == []

    screenshot = tmp_path / "playground.png"
    page_height = browser.execute_script("return document.documentElement.scrollHeight")
    # Tall enough for the whole page in one picture (the window's own frame included).
    browser.set_window_size(1200, page_height + 400)
    assert browser.save_screenshot(str(screenshot))
    print(f"playground screenshot: {screenshot}")
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.size[0] > 0


def test_quantized_dev_prints_the_playground_address(dev):
    printed = [line.split()[2] for line in dev.stdout_lines if line.startswith("# playground: ")]
    assert printed == [f"{_origin(dev)}/playground"]
    response = httpx.get(printed[0], timeout=30)
    assert response.status_code == 200 and "<title>Quantized playground</title>" in response.text
