"""How the CLI prints numbers, times and tables: as ``go tool pprof`` prints them, so the two read alike.

The unit rules follow pprof's ``internal/measurement`` and ``report.selectOutputUnit``: one output unit per table,
picked from the smallest shown value and the total, bytes in steps of 1024, time from ns up to hours, counts plain.
"""

from __future__ import annotations

import math
import shutil
import textwrap
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

__all__ = [
    "format_labels",
    "output_unit",
    "percentage",
    "rfc3339",
    "rfc3339_ns",
    "scaled_label",
    "signed",
    "table",
    "wrap_indented",
]

# (canonical name, aliases, factor to the base unit), smallest first, as pprof's UnitTypes.
_MEMORY = [
    ("B", ("b", "byte"), 1.0),
    ("kB", ("kb", "kbyte", "kilobyte"), float(1 << 10)),
    ("MB", ("mb", "mbyte", "megabyte"), float(1 << 20)),
    ("GB", ("gb", "gbyte", "gigabyte"), float(1 << 30)),
    ("TB", ("tb", "tbyte", "terabyte"), float(1 << 40)),
    ("PB", ("pb", "pbyte", "petabyte"), float(1 << 50)),
]
_TIME = [
    ("ns", ("ns", "nanosecond"), 1.0),
    ("us", ("μs", "us", "microsecond"), 1e3),
    ("ms", ("ms", "millisecond"), 1e6),
    ("s", ("s", "sec", "second"), 1e9),
    ("hrs", ("hour", "hr"), 3600e9),
]
_UNIT_TYPES = [(_MEMORY, ("B", 1.0)), (_TIME, ("s", 1e9))]
_PLAIN = {"count", "sample", "unit", "minimum", "auto", ""}


def _sniff(units: list[tuple[str, tuple[str, ...], float]], unit: str) -> tuple[str, float] | None:
    """The unit ``unit`` names (case-insensitive, a plural ``s`` ignored past two letters), or None."""
    unit = unit.lower()
    if len(unit) > 2:
        unit = unit.removesuffix("s")
    for name, aliases, factor in units:
        if unit in aliases:
            return name, factor
    return None


def _scale(value: float, from_unit: str, to_unit: str) -> tuple[float, str]:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (``minimum``/``auto``: the largest unit it reaches 1 in).

    The returned unit is empty for plain counts, which print without a suffix."""
    if value < 0:
        v, u = _scale(-value, from_unit, to_unit)
        return -v, u
    for units, (default_name, default_factor) in _UNIT_TYPES:
        found = _sniff(units, from_unit)
        if found is None:
            continue
        base = value * found[1]
        if to_unit in ("minimum", "auto"):
            best = [(f, n) for n, _, f in units if base / f >= 1.0]
            if best:
                factor, name = max(best)
                return base / factor, name
            return base / default_factor, default_name
        target = _sniff(units, to_unit)
        if target is None:
            return base / default_factor, default_name
        return base / target[1], target[0]
    return float(value), "" if to_unit in _PLAIN else to_unit


def scaled_label(value: float, from_unit: str, to_unit: str = "auto") -> str:
    """``value`` as pprof prints it: two decimals, ``.00`` dropped, the unit glued on (``1.50MB``, ``30ms``, ``12``)."""
    v, u = _scale(value, from_unit, to_unit)
    text = f"{v:.2f}".removesuffix(".00")
    if text in ("0", "-0"):
        return "0"
    return text + u


def output_unit(shown: Iterable[tuple[int, int]], total: int, sample_unit: str) -> str:
    """The one unit of a table, as pprof's ``selectOutputUnit``: the smallest shown value's unit, unless the total
    needs a larger one and the smallest is under 1 % of it (then the smallest may print as low as 0.01).

    ``shown`` holds (flat, cum) per row; a row's flat counts unless it is zero, then its cum."""
    smallest = 0
    for flat, cum in shown:
        v = abs(flat) or abs(cum)
        if v and (smallest == 0 or v < smallest):
            smallest = v
    largest = abs(total)
    if smallest == 0:
        smallest = largest
    _, min_unit = _scale(smallest, sample_unit, "minimum")
    _, max_unit = _scale(largest, sample_unit, "minimum")
    unit = min_unit
    if min_unit != max_unit and smallest * 100 < largest:
        _, unit = _scale(100 * smallest, sample_unit, "minimum")
    return unit or sample_unit


def percentage(value: float, total: float) -> str:
    """``value`` as a share of ``total``, as pprof prints it: ``  100%``, ``12.34%``, `` 0.12%``, ``0.0012%``."""
    ratio = abs(value / total) * 100 if total else 0.0
    if 99.95 <= ratio <= 100.05:
        return "  100%"
    if ratio >= 1.0:
        return f"{ratio:5.2f}%"
    return f"{ratio:5.2g}%"


def rfc3339(moment: datetime) -> str:
    """A time as RFC 3339 in UTC with ``Z``, to the second: what Grafana, Prometheus and ``--from`` all accept."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ns(ns: int | None) -> str:
    """Unix nanoseconds as :func:`rfc3339`; ``-`` for none."""
    if not ns:
        return "-"
    return rfc3339(datetime.fromtimestamp(ns // 1_000_000_000, UTC))


def format_labels(labels: dict[str, str]) -> str:
    """Labels as a selector, ``{service_name="api", region="eu"}``: what a user pastes into the next query."""
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Rows as aligned columns two spaces apart; the last column is not padded. ``right``: right-aligned columns."""
    if not rows:
        return []
    n = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        cells[-1] = row[-1].rjust(widths[-1]) if n - 1 in right else row[-1]
        lines.append("  ".join(cells).rstrip())
    return lines


def wrap_indented(text: str, indent: str = "    ", width: int | None = None) -> list[str]:
    """``text`` wrapped to the terminal (80 columns when not a terminal) under ``indent``; nothing is cut off."""
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    width = max(width, len(indent) + 20)
    return textwrap.wrap(
        " ".join(text.split()), width=width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    ) or [indent.rstrip()]


def signed(value: float, digits: int = 2) -> str:
    """A change with its sign, ``+1.25`` or ``-0.50``; non-finite values as ``inf``."""
    if not math.isfinite(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}"
