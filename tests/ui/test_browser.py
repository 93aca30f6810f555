"""The web UI in a real browser (Debian's Chromium, headless, driven by Playwright) against a real
``profstore serve`` holding real profiles of the Go target: the Explore view renders a flame
graph and a top table of them, a click zooms, search highlights and filters, the selector
suggests the stored labels, the view's state is in the URL (Back restores it), the keyboard
reaches every control, and the page logs no error."""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from bench.gotarget import build, running
from bench.synthetic import cpu_model, to_pprof
from bench.ui import SIZE_TARGET_KB, asset_sizes
from service.api.auth import hash_token
from service.pprof import profile_pb2 as pb
from tests.conftest import Server, free_port
from tests.pprof_tool import go_bin

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
SERVICE = "ui-demo"
TOKEN = "s3cret-token-for-the-ui"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium() -> str:
    """Debian's Chromium: Playwright's own browser download cannot work here (no internet)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no chromium on PATH: apt-get install chromium (.ci/run does)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def gotarget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("gotarget")
    with running(build(work, go_bin()), work) as url:
        yield url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, gotarget: str) -> Iterator[Server]:
    """A server with three CPU profiles of the Go target (two instances) and a heap profile."""
    work = tmp_path_factory.mktemp("ui")
    srv = Server(work / "data").start()
    target = gotarget
    try:
        with httpx.Client(timeout=30) as c:
            for i in range(3):
                cpu = c.get(f"{target}/debug/pprof/profile", params={"seconds": "1"})
                assert cpu.status_code == 200, cpu.text[:300]
                r = c.post(
                    f"{srv.url}/api/v1/ingest",
                    params={"labels": f'{{service_name="{SERVICE}",instance="i{i % 2}"}}'},
                    content=cpu.content,
                )
                assert r.status_code == 200, r.text
            heap = c.get(f"{target}/debug/pprof/heap")
            r = c.post(
                f"{srv.url}/api/v1/ingest", params={"labels": f'{{service_name="{SERVICE}"}}'}, content=heap.content
            )
            assert r.status_code == 200, r.text
        yield srv
    finally:
        srv.stop()


def watch(pg: Page) -> list[str]:
    """The console errors and uncaught exceptions of ``pg`` from now on (every test wants none)."""
    errors: list[str] = []

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    pg.on("console", console)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.fixture
def page(browser: Browser, served: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors = watch(pg)
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], errors  # no console errors in any test


def _open(page: Page, served: Server, query: str = "") -> None:
    page.goto(f"{served.url}/{query}")
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')", timeout=30_000)


def _state(page: Page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def _painted(page: Page) -> int:
    """Pixels of the flame graph's canvas that are not blank."""
    return int(
        page.evaluate(
            """() => { const c = document.getElementById('flame');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
        )
    )


def test_explore_shows_the_flame_graph_and_top_table_of_the_stored_profiles(page: Page, served: Server) -> None:
    _open(page, served)
    assert _state(page)["type"] == CPU  # CPU is chosen when nothing is asked for
    assert _painted(page) > 10_000
    names = page.locator("#top tbody td:first-child").all_inner_texts()
    assert any(n.startswith("main.") for n in names), names[:10]
    assert "crypto/sha256.block" in names  # the target's hashing workload
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "explore.png")  # shown in the README
    # the same numbers as the API's top for the same query
    top = httpx.get(f"{served.url}/api/v1/top", params={"query": f"{CPU}{{}}", "from": "now-1h", "limit": 500}).json()
    assert names == [r["name"] for r in top["rows"]]


def test_a_click_zooms_into_a_frame_and_back_restores_the_view(page: Page, served: Server) -> None:
    _open(page, served)
    before = _painted(page)
    box = page.locator("#flame").bounding_box()
    assert box is not None
    tree = httpx.get(
        f"{served.url}/api/v1/flamegraph", params={"query": f"{CPU}{{}}", "from": "now-1h", "max_nodes": 8192}
    ).json()["tree"]
    x, widest = 0, (0, 0)  # the widest frame under the root: [start, width) in value
    for child in tree["children"]:
        widest = max(widest, (child["total"], x), key=lambda w: w[0])
        x += child["total"]
    middle = (widest[1] + widest[0] / 2) / tree["total"]
    page.mouse.click(box["x"] + middle * box["width"], box["y"] + 18 + 9)
    page.wait_for_function("location.search.includes('zoom=')")
    assert page.locator("#zoomed").inner_text().startswith("zoomed: ")
    assert _painted(page) != before
    page.go_back()
    page.wait_for_function("!location.search.includes('zoom=')")
    page.wait_for_function("document.getElementById('zoomed').textContent === ''")


def test_a_drag_on_the_time_series_selects_the_range_in_the_url(page: Page, served: Server) -> None:
    _open(page, served, "?range=15m")
    page.wait_for_selector("#ts .u-over")
    over = page.locator("#ts .u-over").bounding_box()
    assert over is not None
    assert page.evaluate("document.querySelectorAll('#ts canvas').length") >= 1
    y = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + 5, y)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] - 5, y, steps=8)
    page.mouse.up()
    page.wait_for_function("location.search.includes('from=') && location.search.includes('until=')")
    state = _state(page)
    assert 0 < int(state["until"]) - int(state["from"]) <= 15 * 60 * 1000
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    assert page.input_value("#range") == "custom"
    page.go_back()
    page.wait_for_function("!location.search.includes('from=')")
    page.wait_for_function("document.getElementById('range').value === '15m'")


def test_a_typed_range_and_a_grouped_time_series(page: Page, served: Server) -> None:
    _open(page, served)
    page.fill("#from", "now-30m")
    page.fill("#until", "now")
    page.press("#until", "Enter")
    page.wait_for_function("location.search.includes('from=now-30m')")
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    assert page.input_value("#range") == "custom"
    page.select_option("#group_by", "instance")
    page.wait_for_function("location.search.includes('group_by=instance')")
    page.wait_for_function("document.querySelectorAll('#ts .u-legend .u-series').length === 3")  # x, i0, i1
    legend = page.locator("#ts .u-legend .u-series").all_inner_texts()
    assert any("i0" in x for x in legend) and any("i1" in x for x in legend), legend


def test_search_highlights_frames_and_filters_the_table(page: Page, served: Server) -> None:
    _open(page, served)
    page.fill("#search", "sha256")
    page.wait_for_function("location.search.includes('search=sha256')")
    names = page.locator("#top tbody td:first-child").all_inner_texts()
    assert names and all("sha256" in n for n in names)
    grey = page.evaluate(
        """() => { const c = document.getElementById('flame');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] === 208 && d[i+1] === 212 && d[i+2] === 217) n++;
            return n; }"""
    )
    assert grey > 0  # frames that do not match are drawn grey
    page.reload()  # the search is part of the URL
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    assert page.input_value("#search") == "sha256"


def test_the_selector_suggests_stored_labels_and_their_values(page: Page, served: Server) -> None:
    _open(page, served)
    page.click("#selector")
    page.wait_for_function("document.querySelectorAll('#suggestions option').length > 0")
    options = page.eval_on_selector_all("#suggestions option", "os => os.map(o => o.value)")
    assert '{service_name="' in options and '{instance="' in options
    page.fill("#selector", '{service_name="')
    page.wait_for_function(
        f"[...document.querySelectorAll('#suggestions option')].some(o => o.value.includes('{SERVICE}'))"
    )
    page.fill("#selector", '{instance="i1"}')
    page.press("#selector", "Enter")
    page.wait_for_function("location.search.includes('selector=')")
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    assert _state(page)["selector"] == '{instance="i1"}'


def test_a_function_opens_as_a_sandwich_of_its_callers_and_callees(page: Page, served: Server) -> None:
    _open(page, served)
    page.locator("#top tbody tr", has_text="crypto/sha256.block").first.click()
    page.wait_for_selector("#sandwich-pane:not([hidden])")
    assert _state(page)["sandwich"] == "crypto/sha256.block"
    assert page.inner_text("#sandwich-name") == "crypto/sha256.block"
    painted = page.evaluate(
        """() => ['callers', 'callees'].map(id => { const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })"""
    )
    assert all(n > 1000 for n in painted), painted
    # The callers' total is the function's cum, as top counts it (once per stack).
    both = page.evaluate(
        """async () => { const { sandwich } = await import('/ui/sandwich.js');
            const r = await fetch('/api/v1/flamegraph?' + new URLSearchParams({
                query: 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{}', from: 'now-1h', max_nodes: 8192 }));
            const s = sandwich((await r.json()).tree, 'crypto/sha256.block');
            return { total: s.callers.total, caller: s.callers.children[0].name, callees: s.callees.total }; }"""
    )
    top = httpx.get(f"{served.url}/api/v1/top", params={"query": f"{CPU}{{}}", "from": "now-1h", "limit": 500}).json()
    row = next(r for r in top["rows"] if r["name"] == "crypto/sha256.block")
    assert both["total"] == both["callees"] == row["cum"]
    assert both["caller"] == "crypto/sha256.(*digest).Write"
    page.click("#sandwich-close")
    page.wait_for_selector("#sandwich-pane[hidden]", state="attached")
    assert "sandwich" not in _state(page)


def test_focus_narrows_the_view_as_pprof_does(page: Page, served: Server) -> None:
    _open(page, served)
    page.fill("#focus", "sha256")
    page.press("#focus", "Enter")
    page.locator("#hide").focus()  # the change is committed when the field is left
    page.wait_for_function("location.search.includes('focus=sha256')")
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    focused = httpx.get(
        f"{served.url}/api/v1/top", params={"query": f"{CPU}{{}}", "from": "now-1h", "limit": 500, "focus": "sha256"}
    ).json()
    page.wait_for_function(f"document.querySelectorAll('#top tbody tr').length === {len(focused['rows'])}")
    assert page.locator("#top tbody td:first-child").all_inner_texts() == [r["name"] for r in focused["rows"]]


def test_profiles_lists_the_stored_profiles_and_opens_one(page: Page, served: Server) -> None:
    _open(page, served)
    page.click("nav a[data-view=profiles]")
    page.wait_for_function("location.search.includes('view=profiles')")
    page.wait_for_function("document.querySelectorAll('#profiles tbody tr').length === 3")
    assert page.get_attribute("nav a[data-view=profiles]", "aria-current") == "page"
    page.screenshot(path=SCREENSHOTS / "profiles.png")
    listed = httpx.get(f"{served.url}/api/v1/profiles", params={"query": f"{CPU}{{}}", "from": "now-1h"}).json()
    newest = listed["profiles"][0]
    page.locator("#profiles tbody tr").first.get_by_role("button", name="Open").click()
    page.wait_for_function("location.search.includes('from=') && !location.search.includes('view=')")
    page.wait_for_function("document.getElementById('status').textContent.includes('in total')")
    state = _state(page)
    assert int(state["from"]) <= newest["ts"] // 10**6 <= int(state["until"])
    assert f'instance="{newest["labels"]["instance"]}"' in state["selector"]
    one = httpx.get(
        f"{served.url}/api/v1/top",
        params={"query": f"{CPU}{state['selector']}", "from": state["from"], "until": state["until"], "limit": 500},
    ).json()
    assert one["total"] == newest["total"]  # that profile alone
    assert page.locator("#top tbody td:first-child").all_inner_texts() == [r["name"] for r in one["rows"]]


def test_the_export_and_the_pprof_command_line_are_what_explore_shows(page: Page, served: Server) -> None:
    _open(page, served)
    page.click("#pprof summary")
    url = page.get_attribute("#export-link", "href")
    assert url is not None and url.startswith(f"{served.url}/api/v1/export?")
    assert page.inner_text("#pprof-command") == f"go tool pprof -http=: '{url}'"
    with page.expect_download() as dl:
        page.click("#download")
    body = Path(dl.value.path()).read_bytes()

    def samples(data: bytes) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:  # what pprof reads of it
        p = pb.Profile()
        p.ParseFromString(gzip.decompress(data))
        return sorted((tuple(s.location_id), tuple(s.value)) for s in p.sample)

    assert body[:2] == b"\x1f\x8b" and samples(body) == samples(httpx.get(url).content) != []


def test_targets_show_health_and_the_last_error(tmp_path: Path, browser: Browser, gotarget: str) -> None:
    refused = f"127.0.0.1:{free_port()}"
    up = gotarget.removeprefix("http://")
    config = tmp_path / "scrape.yaml"
    config.write_text(
        "scrape_configs:\n  - job_name: ui\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{up}', '{refused}']\n"
        "    profiling_config:\n      pprof_config:\n"
        + "".join(f"        {k}: {{enabled: false}}\n" for k in ("process_cpu", "memory", "block", "mutex"))
    )
    srv = Server(tmp_path / "data", config).start()
    try:
        pg = browser.new_page()
        errors = watch(pg)
        pg.goto(f"{srv.url}/?view=targets")
        pg.wait_for_function(
            "[...document.querySelectorAll('#targets td')].some(td => td.textContent === 'down')"
            " && [...document.querySelectorAll('#targets td')].some(td => td.textContent === 'up')",
            timeout=60_000,
        )
        rows = [r.split("\t") for r in pg.locator("#targets tbody tr").all_inner_texts()]
        down = [r for r in rows if r[1] == refused and r[3] == "down"]
        assert down and all("connection_refused" in r[6] for r in down), rows
        assert any(r[1] == up and r[3] == "up" and r[2] == "goroutine" for r in rows), rows
        assert pg.is_hidden("#controls")
        pg.screenshot(path=SCREENSHOTS / "targets.png")
        assert errors == []
        pg.close()
    finally:
        srv.stop()


def test_compare_colours_the_slowed_function_of_a_go_target_as_worse(
    tmp_path: Path, browser: Browser, served: Server
) -> None:
    """The Go target's main.checksumBlock does 4x the work per call from 4 s after its start: its
    CPU before (base, an hour ago) and after (now) in Compare. The diff table and the diff flame
    graph both say it grew."""
    start = time.monotonic()
    labels = '{service_name="slowed"}'
    with (
        running(
            build(tmp_path, go_bin()), tmp_path, "-checksum", "-checksum-slow-after", "4s", "-checksum-slow-factor", "4"
        ) as target,
        httpx.Client(timeout=30) as c,
    ):
        before = c.get(f"{target}/debug/pprof/profile", params={"seconds": "2"}).content
        time.sleep(max(0.0, 5 - (time.monotonic() - start)))
        after = c.get(f"{target}/debug/pprof/profile", params={"seconds": "2"}).content
    now = time.time_ns()
    for body, ts in ((before, now - 3600 * 10**9), (after, now - 60 * 10**9)):
        r = httpx.post(f"{served.url}/api/v1/ingest", params={"labels": labels, "ts": str(ts)}, content=body)
        assert r.status_code == 200, r.text
    pg = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = watch(pg)
    query = "?view=compare&range=15m&selector=" + quote(labels) + "&base_from=now-2h&base_until=now-30m"
    pg.goto(f"{served.url}/{query}")
    pg.wait_for_function("document.getElementById('status').textContent.startsWith('base ')", timeout=30_000)
    row = pg.locator("#diff tbody tr", has_text="main.checksumBlock").first
    assert "worse" in (row.locator("td").nth(3).get_attribute("class") or "")
    colour = pg.evaluate(
        """() => { const c = document.getElementById('diff-flame'); const g = c.flameGraph;
            const r = g.rects.find(([x, y, w, n]) => n.name === 'main.checksumBlock' && w > 2);
            const k = window.devicePixelRatio || 1;
            const d = c.getContext('2d').getImageData(Math.floor((r[0] + r[2] / 2) * k), Math.floor((r[1] + 2) * k), 1, 1).data;
            return [d[0], d[1], d[2]]; }"""
    )
    assert colour[0] > colour[1] + 40 and colour[0] > colour[2] + 40, colour  # red: a larger share than before
    pg.screenshot(path=SCREENSHOTS / "compare.png")
    assert errors == []
    pg.close()


def test_a_finding_opens_as_its_diff_and_is_acknowledged(tmp_path: Path, browser: Browser, corpus: Path) -> None:
    """Two hours of a service's CPU profiles (drawn from real ones) whose sort.insertionSort gets
    50 % slower 20 minutes before the end; detection run through the API finds it, and Findings
    lists it, opens its diff (the function's row marked) and acknowledges it."""
    model = cpu_model(corpus)
    slowed = model.names.index("sort.insertionSort")
    step = 15 * 10**9
    end = (time.time_ns() // step) * step
    steps, change = 600, 520
    start = end - steps * step
    srv = Server(tmp_path / "data").start()
    try:

        def push(i: int) -> None:  # a generator of its own per profile: the same draws whatever the threads do
            rng = np.random.default_rng([5, i])
            data = to_pprof(model, model.draw(rng, 6000, {slowed: 0.5} if i >= change else None), start + i * step)
            r = httpx.post(
                f"{srv.url}/api/v1/ingest",
                params={"labels": '{service_name="checkout",instance="h1:6060"}', "name": "process_cpu"},
                content=data, timeout=60,
            )  # fmt: skip
            assert r.status_code == 200, r.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(push, range(steps)))
        ms = 10**6
        r = httpx.post(
            f"{srv.url}/api/v1/analyze",
            params={
                "from": (end - 30 * 60 * 10**9) // ms, "until": end // ms,
                "baseline_from": start // ms, "baseline_until": (end - 30 * 60 * 10**9) // ms,
            },
            timeout=120,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        found = [f for f in r.json()["findings"] if f["function"] == "sort.insertionSort"]
        assert found, r.json()["findings"]
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = watch(pg)
        pg.goto(f"{srv.url}/?view=findings")
        row = pg.locator("#findings tbody tr", has_text="sort.insertionSort").first
        row.wait_for()
        assert "checkout" in row.inner_text() and "open" in row.inner_text()
        pg.screenshot(path=SCREENSHOTS / "findings.png")
        row.get_by_role("button", name="Open diff").click()
        pg.wait_for_function("location.search.includes('view=compare')")
        pg.wait_for_function("document.getElementById('status').textContent.startsWith('base ')", timeout=30_000)
        marked = pg.locator("#diff tbody tr.match").all_inner_texts()
        assert marked and all("sort.insertionSort" in m for m in marked)
        assert "worse" in (pg.locator("#diff tbody tr.match td").nth(3).get_attribute("class") or "")
        assert _state(pg)["base_until"] and _state(pg)["search"] == "sort.insertionSort"
        pg.go_back()
        pg.wait_for_function("location.search.includes('view=findings')")
        pg.locator("#findings tbody tr", has_text="sort.insertionSort").first.get_by_role(
            "button", name="Acknowledge"
        ).click()
        pg.wait_for_function(
            "![...document.querySelectorAll('#findings tbody tr')].some(r => r.textContent.includes('sort.insertionSort'))"
        )  # the list shows open findings: it left
        listed = httpx.get(f"{srv.url}/api/v1/regressions", params={"state": "acknowledged"}).json()
        assert any(f["function"] == "sort.insertionSort" for f in listed)
        assert errors == []
        pg.close()
    finally:
        srv.stop()


QUERY = {"type", "selector", "range", "from", "until", "layout"}
CONTROLS = {
    "explore": QUERY | {"group_by", "search", "focus", "ignore", "hide", "max_nodes", "reset", "flame"},
    "compare": QUERY | {"base_from", "base_until", "base_selector", "base-flame", "current-flame", "diff-flame"},
    "profiles": QUERY,
    "findings": {"f_service", "f_kind", "f_state"},
    "targets": set(),
}


@pytest.mark.parametrize("view", list(CONTROLS))
def test_the_keyboard_reaches_every_control(page: Page, served: Server, view: str) -> None:
    page.goto(f"{served.url}/?view={view}")
    page.wait_for_function("document.getElementById('status').textContent !== ''")
    want = CONTROLS[view] | {"nav:explore", "nav:compare", "nav:profiles", "nav:findings", "nav:targets"}
    seen: set[str] = set()
    page.locator("body").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        seen.add(
            page.evaluate(
                "(e => e.id || (e.dataset.view ? 'nav:' + e.dataset.view : e.tagName))(document.activeElement)"
            )
        )
    assert want <= seen, want - seen


def test_the_page_and_its_files_are_public_and_the_api_is_not(tmp_path: Path, browser: Browser) -> None:
    """With tokens configured the page loads, asks for a token, and sends it as a bearer token."""
    config = tmp_path / "auth.yaml"
    config.write_text(f"auth:\n  tokens:\n    - {{name: ui, sha256: {hash_token(TOKEN)}, scopes: [read]}}\n")
    srv = Server(tmp_path / "data", config).start()
    try:
        assert httpx.get(f"{srv.url}/").status_code == 200
        assert httpx.get(f"{srv.url}/ui/app.js").status_code == 200
        assert httpx.get(f"{srv.url}/api/v1/profile-types").status_code == 401
        context = browser.new_context()
        pg = context.new_page()
        errors = watch(pg)
        pg.goto(srv.url)
        pg.wait_for_selector("#login[open]")
        pg.fill("#token", TOKEN)
        pg.click("#login button")
        pg.wait_for_selector("#login:not([open])", state="attached")
        assert pg.evaluate("localStorage.getItem('profstore.token')") == TOKEN
        # the API answered the UI with the token: an empty store, and no error
        pg.wait_for_function("document.getElementById('type').options.length === 0")
        assert "error" not in (pg.get_attribute("#status", "class") or "")
        assert errors and all("401" in e for e in errors), errors  # the refusals that asked for the token
        context.close()
    finally:
        srv.stop()


def test_the_ui_ships_small_and_with_its_libraries_licences() -> None:
    """Issue 20: all UI assets together at most 600 KB gzipped; every vendored file is listed with
    its library, version and licence, and each library's licence file ships beside it."""
    assert sum(asset_sizes().values()) / 1024 <= SIZE_TARGET_KB
    vendor = Path(__file__).resolve().parents[2] / "service" / "ui" / "static" / "vendor"
    lines = (vendor / "MANIFEST.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["file", "library", "version", "licence", "source"]
    listed = {line.split("\t")[0] for line in lines[1:]}
    assert listed == {p.name for p in vendor.iterdir()} - {"MANIFEST.tsv"}
    rows = [line.split("\t") for line in lines[1:]]
    for _file, library, version, licence, _source in rows:
        assert version and licence in {"MIT", "Apache-2.0", "BSD-3-Clause", "ISC"}, library  # nothing GPL here
        assert any(f.endswith(".LICENSE") and lib == library for f, lib, *_ in rows), library
