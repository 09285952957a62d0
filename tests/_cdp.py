"""Shared by the browser tests (tests/test_report.py, tests/test_jupyterlab.py): find headless Chromium and talk to it
over the Chrome DevTools protocol on a pipe (--remote-debugging-pipe), with no extra Python package.

The browser is a checked prerequisite, never installed by the tests: `$CHROME` (a path to a Chromium/Chrome binary)
if set, else `chromium`, `chromium-browser`, `google-chrome` or `google-chrome-stable` on PATH, else the macOS app.
A missing browser fails the test with `MISSING_CHROME` (tools/test.sh prints the same fix before it starts)."""
import json, os, select, shutil, subprocess, time
from pathlib import Path

CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAC_APPS = ("/Applications/Chromium.app/Contents/MacOS/Chromium",
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
MISSING_CHROME = ("headless Chromium is a prerequisite of the browser tests and was not found (looked for $CHROME, "
                  f"{', '.join(CHROME_NAMES)}). Fix: `sudo apt-get install -y chromium` (Debian/Ubuntu), "
                  "`brew install --cask chromium` (macOS), or set CHROME=/path/to/chrome.")


def find_chrome() -> str | None:
    "The browser binary: `$CHROME` (must exist), else the first of `CHROME_NAMES` on PATH, else a macOS app."
    env = os.environ.get("CHROME")
    if env:
        p = shutil.which(env) or (env if Path(env).is_file() else None)
        if p is None: raise FileNotFoundError(f"CHROME={env!r} is not an executable file. {MISSING_CHROME}")
        return p
    for n in CHROME_NAMES:
        if p := shutil.which(n): return p
    return next((p for p in MAC_APPS if Path(p).is_file()), None)


def require_chrome() -> str:
    "`find_chrome()`, or fail the calling test with the fix (a missing prerequisite is a failure, not a skip)."
    import pytest
    try: exe = find_chrome()
    except FileNotFoundError as e: pytest.fail(str(e), pytrace=False)
    if exe is None: pytest.fail(MISSING_CHROME, pytrace=False)
    return exe


class Chromium:
    "Minimal CDP client: Chromium reads commands on fd 3 and writes replies/events on fd 4, NUL-separated JSON."
    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--remote-debugging-pipe"]

    def __init__(self, exe, profile):
        cmd_r, self._cmd_w = os.pipe(); self._ev_r, ev_w = os.pipe()
        def child():
            a, b = os.dup(cmd_r), os.dup(ev_w)       # move out of the way before taking 3 and 4
            os.dup2(a, 3); os.dup2(b, 4)
        self.proc = subprocess.Popen([exe, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=child, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(cmd_r); os.close(ev_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout):
        while b"\0" not in self._buf:
            r, _, _ = select.select([self._ev_r], [], [], timeout)
            if not r: raise TimeoutError("no message from chromium")
            chunk = os.read(self._ev_r, 1 << 20)
            if not chunk: raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None, timeout=60):
        self._id += 1; mid = self._id
        m = {"id": mid, "method": method, "params": params or {}}
        if session: m["sessionId"] = session
        os.write(self._cmd_w, json.dumps(m).encode() + b"\0")
        end = time.time() + timeout
        while True:
            r = self._read(max(0.1, end - time.time()))
            if r.get("id") == mid:
                if "error" in r: raise RuntimeError(f"{method}: {r['error']}")
                return r.get("result", {})
            self.events.append(r)

    def wait_event(self, method, timeout=60):
        for e in self.events:
            if e.get("method") == method: return e
        end = time.time() + timeout
        while time.time() < end:
            e = self._read(max(0.1, end - time.time())); self.events.append(e)
            if e.get("method") == method: return e
        raise TimeoutError(method)

    def drain(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            try: self.events.append(self._read(max(0.05, end - time.time())))
            except TimeoutError: break

    def new_page(self, width=1280, height=1000) -> str:
        "Open a blank tab and attach to it; returns the CDP session id (Page, Runtime and Log enabled)."
        tid = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = self.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable"): self.send(m, session=sid)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=sid)
        return sid

    def evaluate(self, expression, session, await_promise=False, timeout=60):
        "Evaluate JavaScript in the page and return its value (JSON-serialisable); a thrown exception raises."
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": await_promise}, session=session, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(f"page exception: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def close(self):
        try: self.send("Browser.close", timeout=10)
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        for fd in (self._cmd_w, self._ev_r):
            try: os.close(fd)
            except OSError: pass
