"""Open a generated report in headless Chromium and look at it as an auditor would.

Chromium is driven through the Chrome DevTools Protocol over a pipe (`--remote-debugging-pipe`:
commands on fd 3, answers on fd 4, NUL-terminated JSON), so no port is opened and no extra
library is needed. Every request the page makes is recorded (`Network.requestWillBeSent`);
anything that leaves the report file (http, https, another file) is a finding. Name resolution
is mapped to nowhere, so even a missed request cannot reach a network.

Debian's `chromium` package is the browser (`.ci/run` installs it); nothing is downloaded.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hil.errors import HilError, HilTimeout

#: The flags the audit check starts Chromium with (issue 12): headless, no sandbox (CI runs as
#: root), nothing in the background that would talk to a network on its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # Belt and braces: a request the page makes is recorded, but never resolved.
                  "--host-resolver-rules=MAP * ~NOTFOUND")

#: URL schemes that stay inside the single-file report.
LOCAL_SCHEMES = ("data:", "blob:", "about:")


class BrowserError(HilError):
    """Chromium is missing, died, or answered a DevTools command with an error."""


def find_chromium() -> str | None:
    """Path of the Chromium executable (env HIL_CHROMIUM, else `chromium` / `chromium-browser` on PATH)."""
    explicit = os.environ.get("HIL_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _high_fd(fd: int) -> int:
    """Move `fd` above 9 so the child's dup2 onto 3 and 4 cannot clobber it."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Chromium:
    """One headless Chromium with a fresh profile, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, executable: str | None = None, *, timeout_s: float = 30.0,
                 window: tuple[int, int] = (1440, 1000)) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("Chromium not found: install Debian's `chromium` package (apt-get install -y chromium) "
                               "or set HIL_CHROMIUM to its path")
        self.executable = exe
        self.timeout_s = timeout_s
        self.window = window
        self.profile = Path(tempfile.mkdtemp(prefix="hil-chromium-"))
        self._next_id = 0
        self._lock = threading.Lock()
        self._pending: dict[int, "queue.Queue[dict[str, Any]]"] = {}
        self.events: list[dict[str, Any]] = []
        self._events_changed = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = b""

    # ------------------------------------------------------------------ process
    def __enter__(self) -> "Chromium":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start Chromium with a fresh `--user-data-dir` and the DevTools pipe on fds 3 and 4."""
        to_child_r, to_child_w = (_high_fd(fd) for fd in os.pipe())
        from_child_r, from_child_w = (_high_fd(fd) for fd in os.pipe())

        def wire_pipe() -> None:  # runs in the child between fork and exec
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                f"--window-size={self.window[0]},{self.window[1]}", "about:blank"]
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, preexec_fn=wire_pipe, pass_fds=(3, 4))
        except OSError as exc:
            raise BrowserError(f"cannot start {self.executable}: {exc}") from exc
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._write = os.fdopen(to_child_w, "wb", buffering=0)
        self._read_fd = from_child_r
        threading.Thread(target=self._reader, name="chromium-devtools", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="chromium-stderr", daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + line)[-4000:]

    def _reader(self) -> None:
        buf = b""
        with os.fdopen(self._read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(1 << 16)
                if not chunk:
                    break
                buf += chunk
                while b"\0" in buf:
                    raw, buf = buf.split(b"\0", 1)
                    self._dispatch(json.loads(raw))
        with self._lock:  # the browser is gone: wake every waiter
            for q in self._pending.values():
                q.put({"error": {"message": "Chromium closed the DevTools pipe"}})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                q = self._pending.pop(message["id"], None)
            if q is not None:
                q.put(message)
            return
        with self._events_changed:
            self.events.append(message)
            self._events_changed.notify_all()

    def _died(self) -> str:
        code = self._proc.poll() if self._proc else None
        tail = self._stderr.decode(errors="replace").strip().splitlines()[-5:]
        return f"exit code {code}, last output: {' | '.join(tail) or '(none)'}"

    def close(self) -> None:
        """Close the browser (politely, then by force) and delete its profile."""
        if self._proc is not None:
            try:
                if self._proc.poll() is None:
                    try:
                        self.send("Browser.close", timeout_s=5)
                    except (BrowserError, HilTimeout):
                        pass
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            finally:
                try:
                    self._write.close()
                except OSError:
                    pass
                self._proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout_s: float | None = None) -> dict[str, Any]:
        """One DevTools command; returns its `result`. An error answer or silence raises."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            answer: "queue.Queue[dict[str, Any]]" = queue.Queue()
            self._pending[ident] = answer
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            self._write.write(json.dumps(message).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"{method}: Chromium is gone ({self._died()}): {exc}") from exc
        wait = timeout_s if timeout_s is not None else self.timeout_s
        try:
            reply = answer.get(timeout=wait)
        except queue.Empty:
            raise HilTimeout(f"Chromium did not answer {method} within {wait:.0f} s", self._died()) from None
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error'].get('message')} ({self._died() if self._proc and self._proc.poll() is not None else 'browser running'})")
        return dict(reply.get("result", {}))

    def wait_event(self, method: str, *, session: str | None = None, timeout_s: float | None = None,
                   since: int = 0) -> dict[str, Any]:
        """The first event `method` (of `session`) at index >= `since`; the timeout names the events seen."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        with self._events_changed:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({str(e.get("method")) for e in self.events})
                    raise HilTimeout(f"no {method} event from Chromium", ", ".join(seen))
                self._events_changed.wait(left)


@dataclass
class PageVisit:
    """What one page load showed and asked for."""

    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def outside(self, allowed_file: Path) -> list[str]:
        """Requests that leave the report: anything but the file itself and data:/blob:/about: URLs."""
        own = allowed_file.resolve().as_uri()
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES) and u.split("#", 1)[0] != own]


class Page:
    """One tab attached with a flat session: navigate, read text, click, screenshot."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self.send(f"{domain}.enable")
        width, height = browser.window
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def open(self, path: Path, timeout_s: float = 60.0) -> PageVisit:
        """Load a local file and wait for its load event; records every request made from here on."""
        start = len(self.browser.events)
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", session=self.session, timeout_s=timeout_s, since=start)
        self._since = start
        return self.visit()

    def visit(self) -> PageVisit:
        """Requests and console errors since the last `open` (call again later to include late requests)."""
        visit = PageVisit(url="")
        for ev in self.browser.events[getattr(self, "_since", 0):]:
            if ev.get("sessionId") != self.session:
                continue
            if ev.get("method") == "Network.requestWillBeSent":
                visit.requests.append(ev["params"]["request"]["url"])
                visit.url = visit.url or ev["params"]["request"]["url"]
            elif ev.get("method") == "Runtime.exceptionThrown":
                visit.console_errors.append(str(ev["params"].get("exceptionDetails", {}).get("text")))
        return visit

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page; returns its value (JSON-able)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed in the page: {result['exceptionDetails'].get('text')}: {expression[:200]}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The visible text of the page."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_text(self, predicate: Callable[[str], bool], what: str, timeout_s: float = 30.0) -> str:
        """Poll the page text until `predicate` holds; the timeout shows the text seen."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            time.sleep(0.1)  # the single-page app renders asynchronously; no event says "done"
        raise HilTimeout(f"the page never showed {what} within {timeout_s:.0f} s", text[-3000:])

    def wait_js(self, expression: str, what: str, timeout_s: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value, the timeout shows the page text."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise HilTimeout(f"the page never showed {what} within {timeout_s:.0f} s", self.text()[-3000:])

    def click_text(self, text: str, timeout_s: float = 15.0) -> None:
        """Click the innermost visible element whose own text is exactly `text` (waits for it to appear)."""
        script = f"""(() => {{
            const want = {json.dumps(text)};
            const all = Array.from(document.querySelectorAll('body *')).filter(e =>
                e.offsetParent !== null && e.textContent.trim() === want);
            const inner = all.filter(e => !all.some(o => o !== e && e.contains(o)));
            if (!inner.length) return false;
            inner[0].scrollIntoView({{block: 'center'}});
            inner[0].click();
            return true;
        }})()"""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(script):
                return
            time.sleep(0.1)
        raise HilTimeout(f"nothing to click with the text {text!r}", self.text()[-3000:])

    def screenshot(self, path: Path) -> Path:
        """A PNG of the visible page."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
