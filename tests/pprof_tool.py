"""Independent truth: what the real ``go tool pprof`` says about a profile file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["go_bin", "merge_proto", "top", "top_values", "totals"]


def go_bin() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go (`go tool pprof` is the reference); .ci/run installs golang-go")
    return go


def _pprof(*args: str) -> str:
    proc = subprocess.run([go_bin(), "tool", "pprof", *args], capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"go tool pprof {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode("utf-8", errors="replace")


def totals(path: Path) -> dict[str, int]:
    """Per-sample-type totals as ``go tool pprof -raw`` lists the samples (samples without locations excluded)."""
    out = _pprof("-raw", "-symbolize=none", str(path)).splitlines()
    header: list[str] = []
    sums: list[int] = []
    in_samples = False
    for i, line in enumerate(out):
        if line.startswith("Samples:"):
            header = out[i + 1].replace("[dflt]", "").split()
            sums = [0] * len(header)
            in_samples = True
            continue
        if line.startswith("Locations"):
            in_samples = False
        if in_samples and ":" in line and line.strip()[:1] in "-0123456789":
            vals = line.split(":", 1)[0].split()
            if len(vals) == len(header):
                sums = [a + int(b) for a, b in zip(sums, vals, strict=True)]
    return dict(zip(header, sums, strict=True))


def top(path: Path, sample_index: str | None = None, nodecount: int = 15) -> list[tuple[str, ...]]:
    """The ``-top`` table (flat, flat%, sum%, cum, cum%, name) as sorted rows."""
    args = ["-top", f"-nodecount={nodecount}", "-symbolize=none"]
    if sample_index:
        args.append(f"-sample_index={sample_index}")
    out = _pprof(*args, str(path)).splitlines()
    start = next((i for i, line in enumerate(out) if "flat%" in line), None)
    assert start is not None, f"no -top table in: {out[:5]}"
    return sorted(tuple(line.split(maxsplit=5)) for line in out[start + 1 :] if line.strip())


def top_values(path: Path, *options: str) -> dict[str, tuple[int, int, str, str]]:
    """Every ``-top`` node in raw units: name → (flat, cum, flat%, cum%), with pprof's own ``options``
    (``-unit=ns`` or ``-unit=B`` for raw numbers, ``-sample_index=…``, ``-focus=…``, ``-ignore=…``, ``-hide=…``)."""
    args = ["-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0", "-symbolize=none"]
    out = _pprof(*args, *options, str(path)).splitlines()
    start = next((i for i, line in enumerate(out) if "flat%" in line), None)
    assert start is not None, f"no -top table in: {out[:5]}"

    def raw(cell: str) -> int:
        digits = cell.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        return int(digits)

    rows = {}
    for line in out[start + 1 :]:
        if line.strip():
            flat, flat_pct, _, cum, cum_pct, name = line.split(maxsplit=5)
            rows[name] = (raw(flat), raw(cum), flat_pct, cum_pct)
    return rows


def merge_proto(paths: list[Path], out: Path) -> Path:
    proc = subprocess.run(
        [go_bin(), "tool", "pprof", "-proto", "-symbolize=none", *map(str, paths)],
        capture_output=True,
        timeout=300,
        check=True,
    )
    out.write_bytes(proc.stdout)
    return out
