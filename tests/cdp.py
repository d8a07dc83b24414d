"""A headless Chromium driven through the DevTools protocol over a pipe (no extra package).

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and
write its answers and events to descriptor 4, each a JSON text ended by a NUL byte. Enough of
the protocol for the explorer's tests: open a page, move, press and release the mouse (with
modifier keys), turn the wheel, and evaluate JavaScript in the page.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

ALT, SHIFT = 1, 8
"""The protocol's modifier bits of the alt and shift keys."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, chromium: str, profile: Path):
        low_r, self._commands = os.pipe()
        self._answers, low_w = os.pipe()
        # the child's ends moved above 9, so that putting them on 3 and 4 cannot overwrite either
        commands_r, answers_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (low_r, low_w))
        os.close(low_r)
        os.close(low_w)

        def wire():  # in the child: commands on 3, answers on 4 (kept open: they are in pass_fds)
            os.dup2(commands_r, 3)
            os.dup2(answers_w, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--window-size=1280,900", f"--user-data-dir={profile}", "--no-first-run", "about:blank"],
            pass_fds=(3, 4, commands_r, answers_w), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_r)
        os.close(answers_w)
        self._buffer = b""
        self._next = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._answers)

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and wait for its answer (events that arrive meanwhile are dropped)."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Evaluate ``expression`` until it is truthy; its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout:g} s: {expression}")

    def open(self, url: str) -> None:
        """Load ``url`` and wait until its document is complete."""
        self.call("Page.navigate", session=True, url=url)
        self.wait_for(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url[:30])})")

    def mouse(self, kind: str, x: float, y: float, modifiers: int = 0, **extra) -> None:
        """One mouse event at page coordinates (x, y): mouseMoved, mousePressed, mouseReleased or mouseWheel."""
        params = {"type": kind, "x": x, "y": y, "modifiers": modifiers, **extra}
        if kind in ("mousePressed", "mouseReleased"):
            params.update(button="left", clickCount=1)
        self.call("Input.dispatchMouseEvent", session=True, **params)

    def drag(self, start: tuple[float, float], end: tuple[float, float], modifiers: int = 0, steps: int = 8) -> None:
        """Press at ``start``, move to ``end`` in steps, release there."""
        path = [(start[0] + k / steps * (end[0] - start[0]), start[1] + k / steps * (end[1] - start[1]))
                for k in range(steps + 1)]
        self.trace(path, modifiers)

    def trace(self, path: list[tuple[float, float]], modifiers: int = 0) -> None:
        """Press at the first point of ``path``, move through the others, release at the last."""
        self.mouse("mouseMoved", *path[0], modifiers)
        self.mouse("mousePressed", *path[0], modifiers)
        for x, y in path[1:]:
            self.mouse("mouseMoved", x, y, modifiers)
        self.mouse("mouseReleased", *path[-1], modifiers)
