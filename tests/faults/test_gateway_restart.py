"""The gateway restarts under an open page in Chromium: the page recovers by itself."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, WebSocket, expect
from websockets.sync.client import connect

from tests.conftest import StartRun
from tests.e2e.test_browser import browser, open_chat, say  # noqa: F401 - the fixture
from tests.support import WSGATE, Process, System, b64

pytestmark = pytest.mark.browser


def restart_gateway(system: System, tmp_path: Path, secret_file: Path) -> None:
    """SIGTERM the gateway (it drains) and start a new one on the same port."""
    old = system.processes[1]
    appserver = system.status()["appserver"]
    assert old.stop() == 0
    start_gateway_again(system, tmp_path, secret_file, appserver)


def start_gateway_again(system: System, tmp_path: Path, secret_file: Path,
                        appserver: str) -> None:
    """A new gateway on the old one's port, linked to the same app server."""
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    new = Process([WSGATE, "gateway", "--port", str(system.port), "--appserver", appserver,
                   "--pool", "2", "--secret-file", str(secret_file)],
                  log_path=tmp_path / "gateway-again.log", env=env)
    new.wait_for_line(r"serving (http://\S+) ")
    system.processes[1] = new
    system.wait_healthy(links=2)


_RECORD_HEADLINES = """() => {
    const headline = document.querySelector("#headline");
    window.wsgateHeadlines = [];
    new MutationObserver(() => window.wsgateHeadlines.push(headline.textContent))
        .observe(headline, {childList: true, characterData: true, subtree: true});
}"""


def send_lines(system: System, lines: list[str]) -> None:
    """Another client says each line, and waits for each to come back."""
    with connect(system.ws_url()) as ws:
        for line in lines:
            ws.send(json.dumps({"Message": b64(line), "Author": "bob"}))
            while True:
                message = json.loads(ws.recv(timeout=10))
                if message.get("Type") == "Chat":
                    break


def test_the_page_reconnects_after_a_gateway_restart_and_shows_each_message_once(
    start_split: StartRun, browser: Browser, tmp_path: Path, secret_file: Path,  # noqa: F811
) -> None:
    """The gateway restarts (its sockets get 1001): the page says it is reconnecting,
    opens a new socket by itself with ?since=, shows the lines sent while it was away,
    shows every line exactly once and in order, and is back on the user list."""
    system = start_split(workers=2)
    dialogs: list[str] = []
    alice = open_chat(browser, system, dialogs)
    first_wsid = alice.locator("#headline").inner_text().rsplit(" - ", 1)[1]
    say(alice, "alias alice")
    expect(alice.locator("#userlist li")).to_have_text(["alice"])
    send_lines(system, ["one", "two", "three"])
    expect(alice.locator("#chat li")).to_have_count(3)

    seen: list[str] = []
    alice.on("websocket", lambda ws: seen.append(ws.url))
    # Every headline the page shows from now on, in order: the page may already be back
    # by the time the new gateway reports healthy (its retry timer is its own).
    alice.evaluate(_RECORD_HEADLINES)
    restart_gateway(system, tmp_path, secret_file)
    # Sent right after the restart: while the page is away it gets these through ?since=.
    send_lines(system, ["four", "five"])
    expect(alice.locator("#headline")).to_have_text(re.compile(r"^CHAT - connected - gw\."))
    headlines = alice.evaluate("() => window.wsgateHeadlines")
    assert "CHAT - reconnecting" in headlines, headlines
    assert headlines[-1].startswith("CHAT - connected - gw."), headlines
    second_wsid = alice.locator("#headline").inner_text().rsplit(" - ", 1)[1]
    assert second_wsid != first_wsid
    send_lines(system, ["six"])

    expect(alice.locator("#chat li")).to_have_count(6)
    bodies = alice.locator("#chat li .media .media-body").all_inner_texts()
    assert [b.splitlines()[0] for b in bodies] == ["one", "two", "three", "four", "five",
                                                    "six"]
    assert any("since=3" in url for url in seen), seen
    expect(alice.locator("#userlist li")).to_have_text(["alice"])
    assert dialogs == []


def test_a_line_a_dying_gateway_never_read_reaches_everyone_once(
    start_split: StartRun, browser: Browser, tmp_path: Path, secret_file: Path,  # noqa: F811
) -> None:
    """The page sends a line into a gateway that is stopped (SIGSTOP: the line waits in
    its socket, unread), which is then killed (-9: the kernel drops the line): the page
    reconnects to a new gateway, sends the line again (it never saw it come back), and
    the line is stored once, shown once, and reaches a client that joins later once."""
    system = start_split(workers=2)
    appserver = system.status()["appserver"]
    sent: list[dict[str, str]] = []

    def record(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page = browser.new_context().new_page()
    page.on("websocket", record)
    page.goto(system.base_url)
    expect(page.locator("#headline")).to_have_text(re.compile(r"^CHAT - connected - gw\."))
    say(page, "alias alice")
    expect(page.locator("#userlist li")).to_have_text(["alice"])
    say(page, "before")
    expect(page.locator("#chat li")).to_have_count(1)

    gateway = system.processes[1]
    os.kill(gateway.pid, signal.SIGSTOP)
    say(page, "into the void")
    line = base64.b64encode(b"into the void").decode()
    deadline = time.monotonic() + 10
    while not any(frame.get("Message") == line for frame in sent):  # left the browser
        assert time.monotonic() < deadline, sent
        page.wait_for_timeout(20)
    assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL  # by PID; closes its log
    start_gateway_again(system, tmp_path, secret_file, appserver)

    # The page retries with back-off (1 s, 2 s, ...) until the new gateway serves.
    expect(page.locator("#chat li")).to_have_count(2, timeout=30_000)
    say(page, "after")
    expect(page.locator("#chat li")).to_have_count(3)
    bodies = page.locator("#chat li .media .media-body").all_inner_texts()
    assert [b.splitlines()[0] for b in bodies] == ["before", "into the void", "after"]
    copies = [frame for frame in sent if frame.get("Message") == line]
    assert len(copies) == 2  # the first into the dead gateway, then once more
    assert copies[0]["Cid"] == copies[1]["Cid"]
    with sqlite3.connect(system.db) as db:
        raws = [json.loads(r[0])["Message"] for r in db.execute(
            "SELECT raw FROM messages ORDER BY id")]
    assert raws == [b64("before"), line, b64("after")]
    with connect(system.ws_url(query="since=0")) as late:
        chats: list[str] = []
        while len(chats) < 3:
            message = json.loads(late.recv(timeout=10))
            if message.get("Type") == "Chat":
                chats.append(message["Message"])
    assert chats == raws
