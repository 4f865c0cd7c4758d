"""The chat page in real Chromium (Debian's, driven by Playwright): two people chat."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import StartRun
from tests.support import System

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
#: The README's picture; WSGATE_UPDATE_SCREENSHOT=1 makes the test refresh it.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot-chat.png"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_chat(browser: Browser, system: System, dialogs: list[str]) -> Page:
    page = browser.new_context(viewport={"width": 1000, "height": 640}).new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(system.base_url)
    expect(page.locator("#headline")).to_have_text(re.compile(r"^CHAT - connected - gw\."))
    return page


def say(page: Page, line: str) -> None:
    page.fill("#inputline", line)
    page.press("#inputline", "Enter")


def test_two_pages_chat(start_run: StartRun, browser: Browser, tmp_path: Path) -> None:
    """Aliases show in the other page's ONLINE USERS, UTF-8 and markup arrive as text,
    the headline shows the WSID, and a closed page leaves the list."""
    system = start_run(workers=2)
    dialogs: list[str] = []
    alice = open_chat(browser, system, dialogs)
    bob = open_chat(browser, system, dialogs)

    on_gateway = {w for link in system.status()["links"] for w in link["sockets"]}
    for page in (alice, bob):
        wsid = page.locator("#headline").inner_text().rsplit(" - ", 1)[1]
        assert wsid in on_gateway

    say(alice, "alias alice")
    expect(bob.locator("#userlist li")).to_have_text(["alice"])
    say(bob, "alias bob")
    for page in (alice, bob):
        expect(page.locator("#userlist li")).to_have_text(["alice", "bob"])

    say(alice, "Grüße, 你好")
    for page in (alice, bob):
        message = page.locator("#chat li").last
        expect(message).to_contain_text("Grüße, 你好")
        expect(message.locator("p")).to_have_text("alice")
        expect(message.locator("small")).to_have_text(
            re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"))

    say(bob, XSS)
    for page in (alice, bob):
        last = page.locator("#chat li").last
        expect(last).to_contain_text(XSS)
        assert page.locator("#chat img").count() == 0
    say(alice, "alias alice-in-chains")
    expect(bob.locator("#userlist li")).to_have_text(["alice-in-chains", "bob"])
    say(bob, "Nice screenshot, everyone.")
    expect(alice.locator("#chat li")).to_have_count(3)
    expect(alice.locator("#inputline")).to_have_value("")

    shot = alice.screenshot(path=str(tmp_path / "chat.png"))
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("WSGATE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(shot)

    bob.close()
    expect(alice.locator("#userlist li")).to_have_text(["alice-in-chains"])
    assert dialogs == []

    system.stop()
    expect(alice.locator("#headline")).to_have_text("CHAT - reconnecting")
