"""The web UI's speed and size in headless Chromium (Debian's, driven by Playwright), against the
targets of issue 20: a flame graph of 8,192 nodes drawn in <= 150 ms and a zoom in <= 50 ms, the
first page (with its first answer) in <= 1 s from a local server, all assets <= 600 KB gzipped.

The tree is synthetic (a fixed seed, branching like a Go CPU profile's: a few wide frames over
many narrow ones), drawn by the page's own FlameGraph module into a 1,400 px wide canvas; the
page load is of a ``profstore serve`` holding 64 small CPU profiles. Printed as a table:

    python -m bench.ui [--repeat N]        (make bench-ui)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import sync_playwright

from bench.cluster import Node, Push, push_all, write_config
from bench.push import bodies
from service.api.ui import STATIC

TARGETS = {"draw 8,192 nodes": 150.0, "zoom": 50.0, "first page and answer": 1000.0}
SIZE_TARGET_KB = 600.0

# A tree of exactly ``n`` nodes in the page, then its draw and a zoom into its widest child, each
# timed ``repeat`` times (ms): {draw: [...], zoom: [...], nodes}.
_MEASURE = """async ([n, repeat]) => {
  const { FlameGraph } = await import('/ui/flame.js');
  let seed = 42; const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const root = { name: 'total', self: 0, total: 0, children: [] };
  const open = [root]; let count = 1;
  while (count < n) {
    const parent = open[Math.floor(Math.pow(rand(), 2) * open.length)];
    const c = { name: `pkg${count % 97}/sub.Function${count}`, self: 1 + Math.floor(rand() * 1000), total: 0, children: [] };
    parent.children.push(c); open.push(c); count++;
  }
  (function sum(x) { x.total = x.self + x.children.reduce((a, c) => a + sum(c), 0); return x.total; })(root);
  const box = document.createElement('div'); box.style.width = '1400px'; document.body.append(box);
  const canvas = document.createElement('canvas'); box.append(canvas);
  const tip = document.createElement('div'); box.append(tip);
  const g = new FlameGraph(canvas, tip);
  g.setData(root);
  const draw = [], zoom = [];
  for (let i = 0; i < repeat; i++) draw.push(g.draw());
  const widest = root.children.reduce((a, c) => (c.total > a.total ? c : a));
  for (let i = 0; i < repeat; i++) {
    const t = performance.now(); g.zoom(widest); zoom.push(performance.now() - t); g.zoom(null);
  }
  g.draw();
  return { draw, zoom, nodes: count, drawn: g.rects.length };
}"""


def asset_sizes() -> dict[str, int]:
    """Gzipped bytes of every file the page loads."""
    return {
        str(p.relative_to(STATIC)): len(gzip.compress(p.read_bytes(), 9))
        for p in sorted(STATIC.rglob("*"))
        if p.is_file() and p.suffix in {".html", ".js", ".css", ".svg"}
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10, help="timed draws, zooms and page loads (default 10)")
    args = ap.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        work = Path(tmp)
        config = work / "node.yaml"
        write_config(config, None, 60)
        node = Node(work, "node0", config)
        try:
            node.wait()
            now = time.time_ns()
            jobs = [
                Push(quote(f'{{service_name="ui-bench",instance="i{i % 4}"}}'), now - (64 - i) * 10**9, body)
                for i, body in enumerate(bodies(64))
            ]
            asyncio.run(push_all([node.url], iter(jobs), 4, None, retry=True))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                loads = []
                for _ in range(args.repeat + 1):
                    t = time.perf_counter()
                    page.goto(node.url)
                    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
                    loads.append((time.perf_counter() - t) * 1e3)
                m = page.evaluate(_MEASURE, [8192, args.repeat])
                browser.close()
        finally:
            node.stop()
    measured = {"draw 8,192 nodes": m["draw"], "zoom": m["zoom"], "first page and answer": loads[1:]}
    sizes = asset_sizes()
    total_kb = sum(sizes.values()) / 1024
    print(
        f"\nprofstore web UI in headless Chromium ({browser_path}), a tree of {m['nodes']:,} nodes of which "
        f"{m['drawn']:,} are at least half a pixel wide at 1,400 px (the rest are not drawn), {args.repeat} runs each\n"
    )
    print("| | median ms | max ms | target ms | |")
    print("|---|---|---|---|---|")
    for name, xs in measured.items():
        med = statistics.median(xs)
        print(
            f"| {name} | {med:.1f} | {max(xs):.1f} | {TARGETS[name]:g} | {'ok' if med <= TARGETS[name] else 'over'} |"
        )
    print(
        f"| assets, gzipped | {total_kb:.1f} KB | | {SIZE_TARGET_KB:g} KB | {'ok' if total_kb <= SIZE_TARGET_KB else 'over'} |"
    )
    print("\n" + ", ".join(f"{k} {v / 1024:.1f} KB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
