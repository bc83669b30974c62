"""A headless Chromium that loads a page and says what happened: a screenshot, the DOM after
the page's scripts ran, the value of an expression, every console error and uncaught exception,
and every URL the page asked for.

It speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in a NUL
byte, read by the browser from fd 3 and written to fd 4) rather than reading ``--enable-logging``
output: the protocol says an error is an error (``console.log`` and ``console.error`` print
alike in that log), reports uncaught exceptions and failed loads as events of their own, and
does not change with the build's log format.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The browser: ``$RYZQ_CHROMIUM`` if set, else the first of :data:`NAMES` on the PATH."""
    given = os.environ.get("RYZQ_CHROMIUM")
    if given:
        return shutil.which(given)
    return next((path for path in map(shutil.which, NAMES) if path), None)


@dataclass
class Page:
    png: bytes
    dom: str
    value: Any
    #: console errors and assertions, uncaught exceptions, and errors the browser logged
    #: (a resource that failed to load, a blocked request)
    errors: list[str] = field(default_factory=list)
    #: every URL the page requested, the page's own included
    requests: list[str] = field(default_factory=list)


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, timeout: float) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.last_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.last_id

    def wait(self, done) -> dict[str, Any]:
        """Reads messages, keeping the events, until ``done(message)``."""
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe (it exited)")
                self.buffer += chunk

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> Any:
        sent = self.send(method, params, session)
        answer = self.wait(lambda m: m.get("id") == sent)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


def _error_of(event: dict[str, Any]) -> str | None:
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        what = details.get("exception", {}).get("description") or details.get("text")
        return f"uncaught exception: {what} ({details.get('url')}:{details.get('lineNumber')})"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return f"console.{params['type']}: {args}"
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
    return None


def load(
    url: str,
    *,
    expression: str = "null",
    width: int = 1280,
    height: int = 2000,
    full_page: bool = False,
    timeout: float = 60.0,
    browser: str | None = None,
) -> Page:
    """Loads ``url`` in a fresh headless Chromium of its own profile and returns what the page
    did; ``expression`` (JavaScript) is evaluated after the load and the page's tasks ran."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on the PATH")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def fds_3_and_4() -> None:
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    with tempfile.TemporaryDirectory(prefix="ryzq-chromium-") as profile:
        process = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # 3 and 4 are dup2's targets: kept open across exec whatever the pipes' numbers.
            pass_fds=(3, 4, to_browser_r, from_browser_w),
            preexec_fn=fds_3_and_4,
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(to_browser_w, from_browser_r, timeout)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            pipe.call("Page.navigate", {"url": url}, session=session)
            pipe.wait(
                lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session
            )
            # Two frames and a task later: what the page's scripts queued has run.
            settle = (
                "new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
                "() => setTimeout(r, 50))))"
            )
            pipe.call("Runtime.evaluate", {"expression": settle, "awaitPromise": True}, session)
            value = pipe.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True, "awaitPromise": True},
                session,
            )
            if "exceptionDetails" in value:
                raise RuntimeError(f"the expression failed: {value['exceptionDetails']}")
            dom = pipe.call(
                "Runtime.evaluate",
                {"expression": "document.documentElement.outerHTML", "returnByValue": True},
                session,
            )["result"]["value"]
            shot: dict[str, Any] = {"format": "png"}
            if full_page:
                size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot["clip"] = {
                    "x": 0,
                    "y": 0,
                    "width": width,
                    "height": size["height"],
                    "scale": 1,
                }
                shot["captureBeyondViewport"] = True
            png = base64.b64decode(pipe.call("Page.captureScreenshot", shot, session)["data"])
            try:
                pipe.call("Browser.close")
                process.wait(10)
            except (EOFError, TimeoutError, subprocess.TimeoutExpired):
                pass
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    errors = [e for e in map(_error_of, pipe.events) if e]
    requests = [
        e["params"]["request"]["url"]
        for e in pipe.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    return Page(
        png=png, dom=dom, value=value["result"].get("value"), errors=errors, requests=requests
    )
