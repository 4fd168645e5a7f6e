"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard library only.

`--remote-debugging-pipe` makes Chromium read protocol messages (JSON, each ended by a NUL byte)
on fd 3 and write its answers and events on fd 4: no port, no WebSocket, nothing to race with.
A page load records what a person would see in the DevTools console as an error:

- Runtime.exceptionThrown: an uncaught exception, a syntax error in a script;
- Runtime.consoleAPICalled with type "error" or "assert": console.error / console.assert;
- Log.entryAdded with level "error": a resource that failed to load, a Content-Security-Policy
  violation (a blocked script, style or image), and the browser's other error messages;

and Network.requestWillBeSent gives every URL the page asked for. Every wait has a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]


@dataclass
class Load:
    """What one page load produced: console errors (one line each) and the URLs requested (data: URLs left out)."""

    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def _error_line(event: dict) -> str | None:
    """The event as one line if it is a console error, else None."""
    method, p = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        d = p["exceptionDetails"]
        desc = (d.get("exception") or {}).get("description") or d.get("text", "")
        return f"exception: {desc.splitlines()[0] if desc else ''} at {d.get('url', '')}:{d.get('lineNumber', 0) + 1}"
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        return f"console.{p['type']}: {args}"
    if method == "Log.entryAdded" and p["entry"].get("level") == "error":
        e = p["entry"]
        return f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip()
    return None


class Browser:
    """One headless Chromium with one tab; `with Browser() as b: load = b.load("file:///...")`."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0):
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="nsgan-chromium-")
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads it while Chromium runs
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def on_fds_3_and_4():  # in the child, before exec: the pipe ends where Chromium expects them
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            preexec_fn=on_fds_3_and_4, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    # -- the protocol -------------------------------------------------------------------------
    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()}): {self._stderr_tail()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._events.append(m)

    def _wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for e in self._events:
            if e.get("method") == method:
                return e
        while True:
            m = self._next(deadline)
            self._events.append(m)
            if m.get("method") == method:
                return m

    # -- what tests use -----------------------------------------------------------------------
    def load(self, url: str, settle: float = 0.3) -> Load:
        """Open `url`, wait for its load event and `settle` seconds more, and report its errors and requests."""
        self._events.clear()
        nav = self.call("Page.navigate", {"url": url})
        load = Load(url)
        if nav.get("errorText"):
            load.errors.append(f"navigation: {nav['errorText']}")
            return load
        if nav.get("loaderId"):  # a new document (a change of #fragment only loads nothing)
            self._wait_event("Page.loadEventFired")
        time.sleep(settle)
        self.evaluate("0")  # collects the events that arrived meanwhile
        for e in self._events:
            line = _error_line(e)
            if line is not None:
                load.errors.append(line)
            if e.get("method") == "Network.requestWillBeSent" and not e["params"]["request"]["url"].startswith("data:"):
                load.requests.append(e["params"]["request"]["url"])
        return load

    def navigate_error(self, url: str) -> str | None:
        """Chromium's error for opening `url` (None: it opened), e.g. net::ERR_FILE_NOT_FOUND."""
        return self.call("Page.navigate", {"url": url}).get("errorText") or None

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page; a thrown exception fails."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def screenshot(self) -> bytes:
        """A PNG of the whole page."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"])

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
