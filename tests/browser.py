"""Open a local HTML page in headless Chromium (Debian's `chromium`) over the DevTools protocol.

`open_page(path)` loads the page, scrolls every image into view (so lazy images load), records every
network request the page made, takes a screenshot and returns what the rendered DOM says. The browser
runs with its own temp profile, on loopback, in its own process group, killed at the end. The DevTools
websocket is aiohttp's client (a dependency of Ray), so no browser automation package or browser download
is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

#: What the page's DOM says, computed in the page after every image has loaded or failed.
PROBE = """
(async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) {
    img.scrollIntoView();
    if (!(img.complete && img.naturalWidth > 0)) {
      await new Promise(r => {
        img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000);
      });
    }
  }
  window.scrollTo(0, 0);
  const rows = Array.from(document.querySelectorAll('table.scenes tbody tr')).map(tr => ({
    id: tr.id, text: tr.innerText,
    cells: Array.from(tr.cells).map(td => td.innerText.trim()),
    img: tr.querySelector('img') ? tr.querySelector('img').getAttribute('src') : null,
  }));
  return JSON.stringify({
    title: document.title,
    rows: rows,
    images: imgs.map(i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth, loading: i.loading})),
    failures: Array.from(document.querySelectorAll('table.failures tbody tr')).map(tr => tr.innerText),
    svgs: document.querySelectorAll('svg').length,
    charts: Array.from(document.querySelectorAll('svg.chart')).map(svg => ({
      label: svg.getAttribute('aria-label'),
      width: svg.getBoundingClientRect().width, height: svg.getBoundingClientRect().height,
      points: svg.querySelectorAll('circle.point').length, bars: svg.querySelectorAll('rect title').length,
    })),
    tables: Object.fromEntries(Array.from(document.querySelectorAll('table')).map((t, i) => [
      t.classList.length ? t.classList[t.classList.length - 1] : 'table' + i,
      Array.from(t.tBodies.length ? t.tBodies[0].rows : []).map(tr => ({
        id: tr.id, cls: tr.className, cells: Array.from(tr.cells).map(td => td.innerText.trim()),
      })),
    ])),
    body: document.body.innerText,
  });
})()
"""


@dataclass
class Rendered:
    title: str
    rows: list[dict[str, Any]]
    images: list[dict[str, Any]]
    failures: list[str]
    svgs: int
    body: str
    charts: list[dict[str, Any]] = field(default_factory=list)  # every svg.chart: label, rendered size, marks
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # table class -> rows (id, cls, cells)
    requests: list[str] = field(default_factory=list)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str | None:
    """The browser's path; installs Debian's `chromium` with apt-get when missing and allowed (root)."""
    path = find_chromium()
    if path or os.geteuid() != 0 or not shutil.which("apt-get"):
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=1200, check=False
    )
    return find_chromium()


def _start(chromium: str, profile: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before DevTools came up")
        time.sleep(0.1)
    raise RuntimeError("chromium's DevTools did not come up within 60 s")


async def _session(ws_url: str, page_url: str, screenshot: Path, width: int, height: int) -> Rendered:
    requests: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        counter = 0
        waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        loaded = asyncio.Event()

        async def reader() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if "id" in data and data["id"] in waiting:
                    waiting.pop(data["id"]).set_result(data)
                elif data.get("method") == "Network.requestWillBeSent":
                    requests.append(data["params"]["request"]["url"])
                elif data.get("method") == "Page.loadEventFired":
                    loaded.set()

        async def call(method: str, **params: Any) -> dict[str, Any]:
            nonlocal counter
            counter += 1
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            waiting[counter] = fut
            await ws.send_str(json.dumps({"id": counter, "method": method, "params": params}))
            reply = await asyncio.wait_for(fut, 120)
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})

        task = asyncio.create_task(reader())
        await call("Network.enable")
        await call("Page.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=page_url)
        await asyncio.wait_for(loaded.wait(), 60)
        result = await call("Runtime.evaluate", expression=PROBE, awaitPromise=True, returnByValue=True)
        shot = await call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        task.cancel()
    probe = json.loads(result["result"]["value"])
    return Rendered(**probe, requests=requests)


def open_page(chromium: str, page: Path, screenshot: Path, width: int = 1280, height: int = 900) -> Rendered:
    """Render `page` (a local file) in headless Chromium; see the module docstring."""
    profile = tempfile.mkdtemp(prefix="rrsis-chromium-")
    proc, port = _start(chromium, profile)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        return asyncio.run(_session(ws_url, page.resolve().as_uri(), screenshot, width, height))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def external_urls(html: str) -> list[str]:
    """Every http(s) URL written anywhere in a page."""
    return re.findall(r"https?://[^\s\"'<>)]+", html)
