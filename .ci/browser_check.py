"""Render every built docs page in headless Chromium and fail on sideways scrolling.

For each HTML page of the built site, at 1280 px and at 390 px wide (a phone):

- the page itself must not scroll sideways, at either width;
- at 1280 px, no table and no code block may need sideways scrolling (its content
  must fit: cut-off columns and lines are what a reader misses);
- at 390 px, every image in the page's content is shown at least at CHART_SCALE of
  its own size, so that a chart's labels stay readable (a wide chart may scroll
  inside its own box instead);
- a full-page screenshot of each page at each width is saved under --screens.

Chromium is Debian's (`apt-get install chromium`); nothing is downloaded. It is
driven through the DevTools protocol over --remote-debugging-pipe (file descriptors
3 and 4, NUL-separated JSON), so only the standard library is needed.

    python .ci/browser_check.py docs/_build/html --screens .ci-output/screens
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

WIDTHS = (1280, 390)
HEIGHT = 900
CHART_SCALE = 0.6  # of the chart's own pixels: ~13 px labels stay ~8 px or larger
MAX_SHOT_HEIGHT = 12000  # px; longer pages are cut in the screenshot, not in the check
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
MEASURE = """(() => {
  const root = document.documentElement;
  const out = {
    page: Math.max(root.scrollWidth, document.body.scrollWidth) - window.innerWidth,
    height: Math.max(root.scrollHeight, document.body.scrollHeight),
    boxes: [], images: [],
  };
  const content = document.querySelector("article") || document.body;
  for (const el of content.querySelectorAll("pre, table, .table-wrapper")) {
    const over = el.scrollWidth - el.clientWidth;
    if (over > 1) out.boxes.push({
      what: el.tagName.toLowerCase() + (el.className ? "." + el.className : ""),
      text: el.textContent.trim().replace(/\\s+/g, " ").slice(0, 70), over,
    });
  }
  for (const img of content.querySelectorAll("img")) {
    out.images.push({src: img.getAttribute("src"),
      shown: img.getBoundingClientRect().width, natural: img.naturalWidth});
  }
  return out;
})()"""


class Browser:
    """One Chromium process, one tab, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, profile: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # Chromium reads commands on fd 3, answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_fds,  # noqa: PLW1509 - single-threaded here
            # close_fds runs after preexec_fn: keep the two we just made, too.
            pass_fds=(3, 4, to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own, helpers included
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                sys.exit("browser_check: Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        result: dict[str, Any] = json.loads(message)
        return result

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    sys.exit(f"browser_check: {method}: {reply['error']}")
                answer: dict[str, Any] = reply.get("result", {})
                return answer

    def wait_for(self, event: str) -> None:
        while self._read().get("method") != event:
            pass

    def open(self, url: str, width: int) -> dict[str, Any]:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=width < 600,  # a phone lays out as a phone
        )
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        measured = self.call("Runtime.evaluate", expression=MEASURE, returnByValue=True)
        result: dict[str, Any] = measured["result"]["value"]
        return result

    def screenshot(self, path: Path, width: int, height: int) -> None:
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, MAX_SHOT_HEIGHT)}
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**clip, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        # Ask Chromium to quit rather than kill it: killed, its helper processes may
        # still be writing to the profile directory as it is deleted. Its answer is not
        # waited for (it may close the pipe first); its exit is.
        message = {"id": self._next_id + 1, "method": "Browser.close", "params": {}}
        try:
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)  # it and every helper
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def problems_of(page: str, width: int, found: dict[str, Any]) -> list[str]:
    problems = []
    if found["page"] > 1:
        problems.append(f"{page} @{width}px: the page scrolls sideways by {found['page']} px")
    if width == max(WIDTHS):
        problems += [
            f"{page} @{width}px: {box['what']} needs {box['over']} px of sideways scrolling"
            f" ({box['text']!r})"
            for box in found["boxes"]
        ]
    else:
        problems += [
            f"{page} @{width}px: {img['src']} is shown at {img['shown']:.0f} px of its "
            f"{img['natural']} px (below {CHART_SCALE:.0%}: its labels are unreadable)"
            for img in found["images"]
            if img["natural"] and img["shown"] < CHART_SCALE * img["natural"]
        ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built HTML directory")
    parser.add_argument("--screens", type=Path, default=Path(".ci-output/screens"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    site: Path = args.site.resolve()
    pages = sorted(p.relative_to(site) for p in site.rglob("*.html"))
    if not pages:
        sys.exit(f"browser_check: no HTML pages under {site}")
    shutil.rmtree(args.screens, ignore_errors=True)
    args.screens.mkdir(parents=True)
    problems: list[str] = []
    # A file a helper process left behind must not fail the check: it is scratch.
    with tempfile.TemporaryDirectory(
        prefix="browser-check-", ignore_cleanup_errors=True
    ) as profile:
        browser = Browser(args.chromium, profile)
        try:
            for page in pages:
                for width in WIDTHS:
                    found = browser.open((site / page).as_uri(), width)
                    name = str(page.with_suffix("")).replace(os.sep, "__")
                    browser.screenshot(args.screens / f"{name}-{width}.png", width, found["height"])
                    problems += problems_of(str(page), width, found)
        finally:
            browser.close()
    print(f"browser_check: {len(pages)} pages at {', '.join(map(str, WIDTHS))} px;"
          f" screenshots in {args.screens}")  # fmt: skip
    for problem in problems:
        print(f"  {problem}")
    if problems:
        sys.exit(f"browser_check: {len(problems)} problem(s)")


if __name__ == "__main__":
    main()
