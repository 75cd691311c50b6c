"""Renders a run report in headless Chromium and checks that no chart area is blank.

  .venv/bin/python benchmarks/report_screenshot.py outputs/reports/run-002-....html \\
      --out /tmp/report.png

1. Where each chart lands: a copy of the page with a small script that writes every
   ``<img class="chart">``'s box (and the page's height) into the DOM, dumped by
   ``chromium --headless --dump-dom`` at the same window width. (The report itself holds
   no script; the copy is temporary.)
2. The screenshot: ``chromium --headless --screenshot=OUT --window-size=1280,<height>``
   of the page as it is.
3. Each chart's box in the screenshot must be non-blank: at least ``--min-ink`` of its
   pixels darker than near-white, and more than one grey level.

Prints one JSON line: ``{"ok", "charts", "blank", "screenshot", "size", "seconds"}``;
exits 1 if a chart is blank or missing. Needs Debian's ``chromium`` (``apt-get install
-y chromium``); CI does not have it, so no test depends on this script.
"""

from __future__ import annotations

import argparse
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
from PIL import Image

WIDTH = 1280
_PROBE = """<script>
window.addEventListener("load", function () {
  var boxes = [];
  document.querySelectorAll("img.chart").forEach(function (img) {
    var r = img.getBoundingClientRect();
    boxes.push({name: img.dataset.chart, x: r.left + window.scrollX,
                y: r.top + window.scrollY, width: r.width, height: r.height});
  });
  var pre = document.createElement("pre");
  pre.id = "chart-boxes";
  pre.textContent = JSON.stringify({height: document.documentElement.scrollHeight,
                                    boxes: boxes});
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium on PATH (Debian: apt-get install -y chromium)")


def _run_chromium(*args: str, timeout: int = 120) -> str:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", "--force-device-scale-factor=1", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def chart_boxes(page: str, workdir: str) -> Dict:
    """{"height": page height, "boxes": [{"name", "x", "y", "width", "height"}]}."""
    with open(page, encoding="utf-8") as handle:
        text = handle.read()
    probe = os.path.join(workdir, "probe.html")
    with open(probe, "w", encoding="utf-8") as handle:
        handle.write(text.replace("</body>", _PROBE + "</body>"))
    dom = _run_chromium(f"--window-size={WIDTH},900", "--dump-dom", "file://" + probe)
    found = re.search(r'<pre id="chart-boxes">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit("the probe found no chart boxes (did the page load?)")
    return json.loads(html_lib.unescape(found.group(1)))


def blank_charts(screenshot: np.ndarray, boxes: List[Dict], min_ink: float) -> List[str]:
    """The names of the charts whose box is (nearly) all background."""
    blank = []
    grey = screenshot.mean(axis=2) if screenshot.ndim == 3 else screenshot
    for box in boxes:
        x0, y0 = int(box["x"]), int(box["y"])
        x1, y1 = x0 + int(box["width"]), y0 + int(box["height"])
        area = grey[y0:y1, x0:x1]
        if area.size == 0 or (area < 235).mean() < min_ink or len(np.unique(area)) < 3:
            blank.append(box["name"])
    return blank


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="the report's HTML file")
    parser.add_argument("--out", default=None, help="the PNG (default: beside the report)")
    parser.add_argument("--min-ink", type=float, default=0.01,
                        help="least fraction of non-white pixels of a chart (default: "
                             "%(default)s)")
    args = parser.parse_args(argv)
    started = time.time()
    page = os.path.abspath(args.report)
    out = os.path.abspath(args.out or os.path.splitext(page)[0] + ".png")
    with tempfile.TemporaryDirectory() as workdir:
        layout = chart_boxes(page, workdir)
    height = int(layout["height"])
    _run_chromium(f"--window-size={WIDTH},{height}", f"--screenshot={out}", "file://" + page)
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB"))
    boxes = layout["boxes"]
    blank = blank_charts(pixels, boxes, args.min_ink)
    outside = [b["name"] for b in boxes if b["y"] + b["height"] > pixels.shape[0] + 1
               or b["x"] + b["width"] > pixels.shape[1] + 1]
    ok = bool(boxes) and not blank and not outside
    print(json.dumps({"ok": ok, "charts": len(boxes), "blank": blank, "outside": outside,
                      "screenshot": out, "size": [pixels.shape[1], pixels.shape[0]],
                      "seconds": round(time.time() - started, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
