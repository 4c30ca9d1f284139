"""``snakemake --report report.html figures``: the experiment's figures in Snakemake's HTML report,
opened in a real browser (headless Chromium) to check that they are there and drawn.

Chromium is Debian's ``chromium`` package, which CI installs (``.ci/run``); without it the test
skips and says why.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, run_snakemake, write_config

#: what a browser running unattended in CI needs: no sandbox (root in a container), no GPU,
#: no network calls of its own, a throw-away profile
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium binary (CI installs Debian's ``chromium`` in ``.ci/run``)."""
    path = _find()
    if path is None:
        pytest.skip(
            f"no chromium on PATH (tried {', '.join(CANDIDATES)}): install Debian's 'chromium' "
            "(`apt-get install chromium`, as .ci/run does)"
        )
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages ending in NUL, commands on fd 3, answers on fd 4), so that the test clicks
    through Snakemake's report like a user, with the standard library only."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_r, self._w = os.pipe()
        self._r, from_w = os.pipe()
        # above 10, so that moving them to 3 and 4 in the child cannot clobber one another
        child_r = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)

        def pipes_to_3_and_4() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        # Chromium's own messages, quoted when it does not answer (see call)
        self.log = profile.parent / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(3, 4),
                preexec_fn=pipes_to_3_and_4,
            )
        os.close(child_r)
        os.close(child_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, *, timeout: float = 30) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self.log.read_text(errors="replace").splitlines()[-20:]
                raise TimeoutError(
                    f"chromium did not answer {method} within {timeout} s (running: "
                    f"{self.proc.poll() is None}); its last messages:\n" + "\n".join(tail)
                )
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited ({self.proc.poll()}) during {method}")
                self._buf += chunk

    def open(self, url: str) -> None:
        # the first answer waits for Chromium's start: 0.3-0.6 s here when idle, but it once
        # took over 30 s in CI on a slow VM, so its bound is generous (a hang still fails)
        self.call("Browser.getVersion", timeout=120)
        target = self.call("Target.createTarget", {"url": url}, timeout=60)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        deadline = time.monotonic() + 60
        while self.js("document.readyState + ' ' + location.href") != f"complete {url}":
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not load {url} within 60 s")
            time.sleep(0.05)

    def js(self, expression: str, *, timeout: float = 30) -> Any:
        """Evaluate ``expression`` in the page (promises awaited) and return its value."""
        out = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in out:
            raise RuntimeError(f"in the page: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self, clip: dict[str, float]) -> bytes:
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": {**clip, "scale": 1}})
        return base64.b64decode(data["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


#: JavaScript helpers for the report page: wait for something, click a link by its text
PAGE_HELPERS = """
window.__until = async (f, ms = 15000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + f);
    await new Promise(r => setTimeout(r, 50));
  }
};
window.__click = async (text) => {
  const a = await __until(() => [...document.querySelectorAll('a')].find(
    a => a.textContent.trim() === text));
  a.click();
};
true
"""

#: a learning-to-learn stand-in that runs in milliseconds: per-task scores and a meta-test, so
#: that the report has all four figures
TASK_MODEL = """
import numpy as np
from l2lflow.optimizees.base import register_optimizee


@register_optimizee("report_test.tasks", array_dims={"task_score": ("task",)}, meta_test=True)
def tasks(params, seed, *, context):
    rng = np.random.default_rng(seed)
    skill = -((params["a"] - 0.5) ** 2) - 0.1 * np.log(params["b"]) ** 2
    scores = skill + 0.05 * rng.standard_normal(4) + np.linspace(0, 0.3, 4)
    return {"fitness": float(scores.mean()), "task_score": scores}
"""


def _rst(name: str) -> str:
    """The caption of a figure as a reader sees it (without the reStructuredText markup)."""
    return (REPO / "workflow" / "report" / f"{name}.rst").read_text().replace("*", "")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _colours(png: bytes) -> int:
    import io

    from matplotlib.image import imread

    img = imread(io.BytesIO(png), format="png")
    return int(np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0])


@pytest.mark.slow  # a run, the figures, the report and Chromium: ~40 s
def test_snakemake_report_shows_every_figure_in_chromium(chromium, tmp_path, monkeypatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "report_test_model.py").write_text(TASK_MODEL)
    # Snakemake, the engine and the workers import the model from here
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(models), os.environ.get("PYTHONPATH")]))
    )
    cfg = write_config(
        tmp_path,
        name="report",
        generations=4,
        population_size=8,
        direction="maximize",
        optimizee={"name": "report_test_model:tasks", "meta_test": {"top_k": 2}},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    results = tmp_path / "results" / "report"
    # the README's order: the run, `l2lflow plot`, then the report's figures and the report
    run_snakemake(tmp_path, cfg)
    plot = subprocess.run(
        [sys.executable, "-m", "l2lflow", "plot", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plot.returncode == 0, plot.stderr
    drawn = run_snakemake(tmp_path, cfg, "--cores", "1", "figures")
    figures = {p.stem: p for p in (results / "report").glob("*.png")}
    assert sorted(figures) == ["fitness", "parameters", "runtime", "tasks"]
    report = tmp_path / "report.html"
    proc = run_snakemake(tmp_path, cfg, "--report", str(report), "figures")
    assert report.exists(), proc.stderr
    for out in (drawn, proc):
        assert "Missing metadata" not in out.stdout + out.stderr, out.stdout + out.stderr

    captions = {name: " ".join(_rst(name).split()[:3]) for name in figures}
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(chromium, profile)
    try:
        browser.open(report.as_uri())
        browser.js(PAGE_HELPERS)
        _check_landing(browser, figures["fitness"], tmp_path / "landing.png")
        # the report's own navigation: Results -> the experiment's category -> one row per figure
        browser.js("__click('Results')")
        browser.js("__until(() => !!document.querySelector('tbody tr'))")
        labels = browser.js(
            "[...document.querySelectorAll('tbody tr td:first-child')].map(td => td.textContent)"
        )
        assert labels == ["1. fitness", "2. parameters", "3. tasks", "4. runtime"]
        crumbs = browser.js("[...document.querySelectorAll('nav ol a')].map(a => a.textContent)")
        assert "report" in crumbs  # the category is the experiment's name
        for row, label in enumerate(labels):
            name = label.split(". ", 1)[1]
            browser.js(
                f"document.querySelectorAll('tbody tr')[{row}]"
                ".querySelector('a[iconname=eye]').click(); true"
            )
            shown = browser.js(
                """__until(() => {
                  const img = [...document.querySelectorAll('img')].find(
                    i => i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 0);
                  if (!img) return null;
                  const r = img.getBoundingClientRect();
                  return {src: img.src, w: img.naturalWidth, h: img.naturalHeight,
                          x: r.x, y: r.y, width: r.width, height: r.height};
                })"""
            )
            data = figures[name].read_bytes()
            # the browser decoded the very PNG that `l2lflow plot` wrote ...
            assert base64.b64decode(shown["src"].split(",", 1)[1]) == data, name
            assert (shown["w"], shown["h"]) == _png_size(data), name
            # ... and drew it on the page, large and not blank
            assert shown["width"] > 300 and shown["height"] > 150, (name, shown["width"])
            clip = {k: shown[k] for k in ("x", "y", "width", "height")}
            assert _colours(browser.screenshot(clip)) > 50, f"{name}: drawn almost blank"
            # its caption (workflow/report/<name>.rst) is one click away
            browser.js(
                f"document.querySelectorAll('tbody tr')[{row}]"
                ".querySelector('a[iconname=information-circle]').click(); true"
            )
            text = browser.js(
                f"__until(() => document.body.innerText.includes({json.dumps(captions[name])})"
                " && document.body.innerText)"
            )
            assert figures[name].name in text and "figures" in text  # file name and the rule
            browser.js("__click('report')")  # back to the table of figures
            browser.js("__until(() => !!document.querySelector('tbody tr a[iconname=eye]'))")
    finally:
        browser.close()


def _check_landing(browser: Browser, fitness_png: Path, screenshot: Path) -> None:
    """The report opens on the results: the run's findings and the fitness figure first, the
    workflow's graph beside them. A screenshot of the landing is kept (``screenshot``; also
    copied to $L2LFLOW_REPORT_SCREENSHOT when set)."""
    landing = browser.js(
        """__until(() => {
          const img = [...document.querySelectorAll('img')].find(
            i => i.alt === 'fitness per generation' && i.complete && i.naturalWidth > 0);
          if (!img) return null;
          const r = img.getBoundingClientRect();
          const graph = [...document.querySelectorAll('svg, canvas')].filter(
            e => e.getBoundingClientRect().height > 50);
          return {src: img.src, x: r.x, y: r.y, width: r.width, height: r.height,
                  text: document.body.innerText,
                  graph: graph.length ? graph[0].getBoundingClientRect().toJSON() : null};
        })"""
    )
    png = browser.screenshot({"x": 0, "y": 0, "width": 1400, "height": 1000})
    screenshot.write_bytes(png)
    keep = os.environ.get("L2LFLOW_REPORT_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)
    text = landing["text"]
    assert "l2lflow experiment report" in text, text[:2000]
    assert "best fitness" in text and "meta-test of the 2 best on held-out tasks" in text, text
    assert "failures: 0 of 32 evaluations" in text, text
    assert base64.b64decode(landing["src"].split(",", 1)[1]) == fitness_png.read_bytes()
    graph = landing["graph"]  # the workflow's graph (Snakemake draws it beside the text)
    assert graph is not None, "no workflow graph on the landing page"
    beside = graph["x"] >= landing["x"] + landing["width"] - 1
    below = graph["y"] >= landing["y"] + landing["height"] - 1
    assert beside or below, (graph, landing)
    assert landing["y"] < 1000 and landing["width"] > 500, landing  # on the first screen
    assert _colours(png) > 50, "the landing is drawn almost blank"
