"""The merged call tree of a stack set, as nested JSON or Pyroscope's ``names`` + ``levels``.

The tree is built level by level in numpy (one ``unique`` per depth, not a Python walk per
stack). ``max_nodes`` keeps the nodes with the largest totals (a parent's total is never
below its child's, so what is kept stays connected) and gives each parent whose children were
cut one ``other`` child holding their sum, so every total still adds up. Children are ordered
by name, as Pyroscope orders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from service.query.stacks import StackSet, under_roots
from service.types import I64

__all__ = ["Tree", "build_tree", "diff_levels", "nested_json", "pyroscope_levels"]

OTHER = "other"
ROOT = "total"


@dataclass(frozen=True, slots=True)
class Tree:
    """Nodes in creation order; node 0 is the root."""

    names: list[str]
    name: I64  # per node: code into ``names``
    parent: I64  # -1 for the root
    total: I64
    self_: I64

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in range(self.name.size)]
        for node, par in enumerate(self.parent.tolist()):
            if par >= 0:
                kids[par].append(node)
        for k in kids:
            k.sort(key=lambda n: (self.names[self.name[n]], n))
        return kids


def build_tree(s: StackSet, max_nodes: int | None = None) -> Tree:
    names = [*s.names, ROOT, OTHER]
    root_code, other_code = len(s.names), len(s.names) + 1
    n_st = s.values.size
    depth = s.depth
    name = [np.array([root_code])]
    parent = [np.array([-1])]
    total = [np.array([s.total])]
    self_ = [np.array([int(s.values[depth == 0].sum())])]
    at = np.zeros(n_st, np.int64)  # the node each stack has reached
    count = 1
    level = 0
    width = len(names)
    while True:
        active = np.flatnonzero(depth > level)
        if active.size == 0:
            break
        code = s.frames[s.offsets[active + 1] - 1 - level]  # root-first
        keys, inv = np.unique(at[active] * width + code, return_inverse=True)
        inv = inv.reshape(-1)
        ids = count + np.arange(keys.size)
        at[active] = ids[inv]
        name.append(keys % width)
        parent.append(keys // width)
        total.append(np.bincount(inv, weights=s.values[active], minlength=keys.size).astype(np.int64))
        ends = depth[active] == level + 1
        self_.append(np.bincount(inv[ends], weights=s.values[active][ends], minlength=keys.size).astype(np.int64))
        count += keys.size
        level += 1
    tree = Tree(names, *(np.concatenate(x).astype(np.int64) for x in (name, parent, total, self_)))
    return _truncate(tree, max_nodes, other_code) if max_nodes and tree.name.size > max_nodes else tree


def _kept(total: I64, max_nodes: int) -> npt.NDArray[np.bool_]:
    """The ``max_nodes`` nodes with the largest totals (and the root). Parents rank before their
    children: by total descending, then creation order (shallower first)."""
    rank = np.lexsort((np.arange(total.size), -total))
    kept = np.zeros(total.size, bool)
    kept[rank[:max_nodes]] = True
    kept[0] = True
    return kept


def _truncate(t: Tree, max_nodes: int, other_code: int, kept: npt.NDArray[np.bool_] | None = None) -> Tree:
    kept = _kept(t.total, max_nodes) if kept is None else kept
    cut = ~kept & (t.parent >= 0)
    cut &= kept[np.maximum(t.parent, 0)]  # the topmost cut node of each cut subtree
    lost = np.bincount(t.parent[cut], weights=t.total[cut], minlength=t.name.size).astype(np.int64)
    new_id = np.cumsum(kept) - 1
    parents_with_cut = np.flatnonzero(lost > 0)
    n_kept = int(kept.sum())
    return Tree(
        t.names,
        np.concatenate([t.name[kept], np.full(parents_with_cut.size, other_code)]),
        np.concatenate([np.where(t.parent[kept] >= 0, new_id[np.maximum(t.parent[kept], 0)], -1), new_id[parents_with_cut]]),
        np.concatenate([t.total[kept], lost[parents_with_cut]]),
        np.concatenate([t.self_[kept], lost[parents_with_cut]]),
    ) if n_kept else t  # fmt: skip


def nested_json(t: Tree) -> str:
    """``{"name", "self", "total", "children": [...]}`` from the root, as JSON text.

    Written by an explicit stack, not by recursion: a stack 1,000 frames deep (pprof allows any
    depth; scrapes keep 1,024) would exceed Python's recursion limit in a recursive builder, in
    pydantic and in the ``json`` encoder alike.
    """
    kids = t.children()
    out: list[str] = []
    todo: list[int | str] = [0]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        name = json.dumps(t.names[t.name[item]])
        out.append(f'{{"name":{name},"self":{int(t.self_[item])},"total":{int(t.total[item])},"children":[')
        todo.append("]}")
        for n, k in enumerate(reversed(kids[item])):
            todo.append(k)
            if n < len(kids[item]) - 1:
                todo.append(",")
    return "".join(out)


def pyroscope_levels(t: Tree) -> dict[str, Any]:
    """Pyroscope's flame graph layout: ``names`` (root name first) and per depth ``[x_delta, total, self, name]``."""
    kids = t.children()
    index = {ROOT: 0}  # name -> its code, in first-seen order (the order of ``names``)
    levels: list[list[int]] = []
    row_end: list[int] = []
    stack = [(0, 0, 0)]  # (node, depth, absolute x); depth-first, left to right
    max_self = 0
    while stack:
        node, d, x = stack.pop()
        code = index.setdefault(t.names[t.name[node]], len(index))
        if d == len(levels):
            levels.append([])
            row_end.append(0)
        total, self_ = int(t.total[node]), int(t.self_[node])
        levels[d] += [x - row_end[d], total, self_, code]
        row_end[d] = x + total
        max_self = max(max_self, self_)
        cx = x + self_  # the parent's self first, then its children
        placed = []
        for k in kids[node]:
            placed.append((k, d + 1, cx))
            cx += int(t.total[k])
        stack.extend(reversed(placed))
    return {"names": list(index), "levels": levels, "total": int(t.total[0]), "max_self": max_self}


def diff_levels(left: StackSet | None, right: StackSet | None, max_nodes: int) -> dict[str, Any]:
    """Pyroscope's diff flame graph: one tree over both sides' stacks, each node as
    ``[x_left_delta, total_left, self_left, x_right_delta, total_right, self_right, name]`` (x deltas
    per side as in :func:`pyroscope_levels`). Nodes are kept by their combined total, so both sides
    keep the same nodes and each side's totals still add up."""
    empty = {
        "names": [ROOT],
        "levels": [[0, 0, 0, 0, 0, 0, 0]],
        "total": 0,
        "max_self": 0,
        "left_ticks": 0,
        "right_ticks": 0,
    }
    sides = [s for s in (left, right) if s is not None]
    if not sides:
        return empty
    both = under_roots([([], s) for s in sides])
    n_left = left.values.size if left is not None else 0
    is_left = np.arange(both.values.size) < n_left
    zero = np.zeros_like(both.values)
    lt = build_tree(replace(both, values=np.where(is_left, both.values, zero)))
    rt = build_tree(replace(both, values=np.where(is_left, zero, both.values)))
    if lt.name.size > max_nodes:
        kept = _kept(lt.total + rt.total, max_nodes)
        other = len(both.names) + 1
        lt, rt = _truncate(lt, max_nodes, other, kept), _truncate(rt, max_nodes, other, kept)
    kids = lt.children()
    index = {ROOT: 0}  # name -> its code, in first-seen order (the order of ``names``)
    levels: list[list[int]] = []
    ends: list[list[int]] = []  # per depth: end of the last node, left and right
    stack = [(0, 0, 0, 0)]  # (node, depth, x left, x right)
    max_self = 0
    while stack:
        node, d, xl, xr = stack.pop()
        code = index.setdefault(lt.names[lt.name[node]], len(index))
        if d == len(levels):
            levels.append([])
            ends.append([0, 0])
        tl, sl, tr, sr = int(lt.total[node]), int(lt.self_[node]), int(rt.total[node]), int(rt.self_[node])
        levels[d] += [xl - ends[d][0], tl, sl, xr - ends[d][1], tr, sr, code]
        ends[d] = [xl + tl, xr + tr]
        max_self = max(max_self, sl, sr)
        cl, cr = xl + sl, xr + sr
        placed = []
        for k in kids[node]:
            placed.append((k, d + 1, cl, cr))
            cl += int(lt.total[k])
            cr += int(rt.total[k])
        stack.extend(reversed(placed))
    left_ticks, right_ticks = int(lt.total[0]), int(rt.total[0])
    return {
        "names": list(index),
        "levels": levels,
        "total": left_ticks + right_ticks,
        "max_self": max_self,
        "left_ticks": left_ticks,
        "right_ticks": right_ticks,
    }
