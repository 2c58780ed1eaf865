"""
End to end: serve the demo on 127.0.0.1 as its command line does, and drive it with headless Chromium.

Needs Debian's `chromium` and `chromium-driver`. CI installs them and sets LAVIN_REQUIRE_BROWSER=1, under which the
test fails without them; elsewhere (the README's test command as an ordinary user) it skips, naming the packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from transformers_lavin.chat import DEMO_MODEL_NAME, chat_stream, load_image
from transformers_lavin.chat import app as chat_app
from transformers_lavin.chat.app import launch, load_demo

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MAX_NEW_TOKENS = 12
WAIT = 30  # seconds for anything the page has to do


class App:
    """The demo served on 127.0.0.1 as `lavin-chat` serves it (same loading and launch), in this process."""

    def __init__(self, model: str = DEMO_MODEL_NAME):
        with socket.socket() as probe:  # a free port; the tiny race with other processes is acceptable here
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.demo = load_demo(model, max_new_tokens=MAX_NEW_TOKENS)
        launch(self.demo, port=self.port, prevent_thread_lock=True, quiet=True)

    def is_serving(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def chat_calls() -> Iterator[list[dict]]:
    """What the app handed the chat function on each turn: the browser's input must arrive there intact."""
    calls = []

    def recording_chat_stream(model, processor, message, history, image, **settings):
        calls.append({"message": message, "history": [dict(turn) for turn in history], "image": image})
        return chat_stream(model, processor, message, history, image, **settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chat_app, "chat_stream", recording_chat_stream)
        yield calls


@pytest.fixture(scope="module")
def apps(chat_calls, tmp_path_factory) -> Iterator[dict[str, App]]:
    """The demo with its default model, and one pointed at a model directory that does not exist."""
    started = {"demo": App(), "broken": App(str(tmp_path_factory.mktemp("apps") / "no-such-model"))}
    try:
        for app in started.values():
            assert app.is_serving(), f"nothing serves {app.url}"
        yield started
    finally:
        for app in started.values():
            app.demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    """Headless Chromium from the system packages, with a fresh profile and a network log."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            message = f"{path} is missing; install it with: apt-get install -y {package}"
            if os.environ.get("LAVIN_REQUIRE_BROWSER") == "1":
                pytest.fail(message)
            pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # Both paths are given, so Selenium has nothing to look up or download.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


class ChatPage:
    """The demo page as a user sees it."""

    def __init__(self, driver: WebDriver, url: str, screenshots: Path):
        self.driver, self.screenshots = driver, screenshots
        driver.get(url)
        self.wait_for(lambda: self.find("#lavin-input textarea"), "the message box")

    def find(self, selector: str):
        found = self.driver.find_elements(By.CSS_SELECTOR, selector)
        return found[0] if found else None

    def wait_for(self, condition, what: str):
        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(lambda _: condition())
        except Exception:
            shot = self.screenshots / "timeout.png"
            self.driver.save_screenshot(str(shot))
            pytest.fail(f"timed out waiting for {what}; status: {self.status()!r}; screenshot: {shot}")

    def status(self) -> str:
        element = self.find("#lavin-status")
        return element.text.strip() if element else ""

    def answers(self) -> list[str]:
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "#lavin-chatbot [data-testid='bot']")]

    def attach(self, path: Path) -> None:
        self.find("#lavin-input input[type='file']").send_keys(str(path))
        # The file is uploaded at once; wait for its thumbnail (or its name) in the message box.
        self.wait_for(lambda: self.find("#lavin-input .thumbnail-item"), f"the upload of {path.name}")

    def send(self, text: str) -> None:
        box = self.find("#lavin-input textarea")
        box.send_keys(text)
        self.find("#lavin-input [data-testid='submit-button']").click()

    def ask(self, text: str) -> str:
        """Send a message and wait for the whole streamed answer; return its text."""
        count = len(self.answers())
        self.send(text)
        self.wait_for(lambda: self.status().startswith(("Answered", "⚠️")), "the answer")
        assert self.status().startswith("Answered"), self.status()
        answers = self.answers()
        assert len(answers) == count + 1
        return answers[-1]


def letters_and_digits(text: str) -> str:
    """Compare what a random model says by its ASCII letters and digits: the page renders the rest as Markdown."""
    return re.sub(r"[^A-Za-z0-9]", "", text)


def test_chat_with_an_image(apps, chat_calls, browser, demo_model, picture, tmp_path):
    question, follow_up = "What is in the image?", "And what colour is it?"
    page = ChatPage(browser, apps["demo"].url, tmp_path)
    chat_calls.clear()

    page.attach(picture)
    answer = page.ask(question)
    model, processor = demo_model  # built like the app's own copy (same seed), so the same greedy answer
    expected = list(chat_stream(model, processor, question, [], load_image(picture), max_new_tokens=MAX_NEW_TOKENS))
    assert answer.strip(), "the answer is empty"
    assert letters_and_digits(answer) == letters_and_digits(expected[-1])

    # The upload shows in the conversation and in the preview, and the routing plot is drawn for this turn.
    users = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#lavin-chatbot [data-testid='user']")]
    assert users == ["(image: disc.png)", question]
    preview = page.find("#lavin-image img")
    assert preview and browser.execute_script("return arguments[0].naturalWidth", preview) == 64
    assert page.find("#lavin-routing img, #lavin-routing canvas, #lavin-routing svg"), "no routing plot"

    # A follow-up turn is answered with the history and the same image.
    assert page.ask(follow_up).strip()
    assert [call["message"] for call in chat_calls] == [question, follow_up]
    assert chat_calls[0]["history"] == []
    assert chat_calls[1]["history"] == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": expected[-1]},
    ]
    for call in chat_calls:
        assert call["image"].tobytes() == load_image(picture).tobytes()
    browser.save_screenshot(str(tmp_path / "chat.png"))
    assert (tmp_path / "chat.png").stat().st_size > 10_000

    # Nothing in the page can send the conversation or the image away, and everything it loaded came from the app.
    assert not browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Share']")
    hosts = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlsplit(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                hosts.add(url.hostname)
    assert hosts == {"127.0.0.1"}


def test_bad_input_gets_a_readable_message(apps, chat_calls, browser, tmp_path):
    page = ChatPage(browser, apps["demo"].url, tmp_path)
    chat_calls.clear()

    page.send("")
    page.wait_for(lambda: "Please type a message" in page.status(), "the empty-message warning")

    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: eggs, milk\n")
    page.attach(notes)
    page.send("What does this say?")
    page.wait_for(lambda: "'notes.txt' is not an image" in page.status(), "the not-an-image warning")
    assert page.answers() == []
    # The typed text is kept, so only the attachment has to be fixed.
    assert page.find("#lavin-input textarea").get_attribute("value") == "What does this say?"

    fake = tmp_path / "photo.png"
    fake.write_bytes(b"these bytes are no PNG")
    page.attach(fake)
    page.send("")
    page.wait_for(lambda: "'photo.png' is not an image" in page.status(), "the broken-image warning")
    browser.save_screenshot(str(tmp_path / "bad-input.png"))

    # The app keeps serving: the next proper message is answered.
    page.find("#lavin-input textarea").clear()
    assert page.ask("Hello there").strip()
    # Only that message reached the model, and without an image: the rejected files were not kept.
    assert [(call["message"], call["image"]) for call in chat_calls] == [("Hello there", None)]


def test_model_that_fails_to_load(apps, browser, tmp_path):
    app = apps["broken"]
    page = ChatPage(browser, app.url, tmp_path)
    page.wait_for(lambda: "Could not load the model from" in page.status(), "the load error")
    assert "no such directory" in page.status()
    page.send("Hello?")
    page.wait_for(lambda: "No model is loaded" in page.status(), "the no-model answer")
    browser.save_screenshot(str(tmp_path / "broken-model.png"))
    assert app.is_serving(), "the app stopped serving"


def test_app_listens_on_loopback_only(apps):
    # An address of this machine that is not loopback, read from its interfaces (nothing is sent).
    address = next(
        (
            entry.address
            for entries in psutil.net_if_addrs().values()
            for entry in entries
            if entry.family == socket.AF_INET and not entry.address.startswith("127.")
        ),
        None,
    )
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with socket.socket() as client:
        client.settimeout(2)
        assert client.connect_ex((address, apps["demo"].port)) != 0, f"the app answers on {address}"
