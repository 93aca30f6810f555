"""Split a pushed profile by its samples' string labels, as Pyroscope does with what its SDKs push.

Pyroscope's SDKs put dynamic tags (``pyroscope.tag_wrapper``, ``wrapWithLabels``) on samples, not
on the series, and Pyroscope turns them into series labels: one profile per distinct label set,
so ``{service_name="app", phase="hot"}`` selects them like any tag. ``span_id`` stays on the
samples (``profile_id`` is renamed to it): span profiles select samples by it, and a series per
span would be unbounded. Numeric labels stay on the samples too.

The parts are selections from the decoded columns (:meth:`~service.pprof.decode_fast.Columns.select`):
the profile is parsed once, whatever it is split into.
"""

from __future__ import annotations

import numpy as np

from service.pprof.decode import Envelope, derived

__all__ = ["SPAN_ID", "split_by_sample_labels"]

SPAN_ID = "span_id"
PROFILE_ID = "profile_id"


def split_by_sample_labels(env: Envelope) -> list[tuple[dict[str, str], Envelope]]:
    """(extra series labels, profile) per label set of a valid profile; ``env`` itself when no sample
    carries a string label other than ``span_id`` and none is named ``profile_id``."""
    c, strings = env.columns, env.strings
    lab = c.labels
    if lab.size == 0:
        return [({}, env)]
    keys = np.unique(lab[:, 1])
    names = [strings[k] for k in keys.tolist()]
    profile_id = keys[[n == PROFILE_ID for n in names]]
    moving = keys[[bool(n) and n not in (SPAN_ID, PROFILE_ID) for n in names]]
    renamed = np.isin(lab[:, 1], profile_id)
    pair = (lab[:, 2] != 0) & np.isin(lab[:, 1], moving)
    if renamed.any():
        lab = lab.copy()
        if SPAN_ID in names:
            span = int(keys[names.index(SPAN_ID)])
        else:
            strings = [*strings, SPAN_ID]
            span = len(strings) - 1
        lab[renamed, 1] = span
    n = c.sample_locations.size
    values = c.values.reshape(n, -1)
    if not pair.any():
        if not renamed.any():
            return [({}, env)]
        return [({}, derived(env, c.select(np.arange(n), values, labels=lab), strings=strings, salt=SPAN_ID))]
    sets: dict[int, list[tuple[str, str]]] = {}
    for owner, key, value in lab[pair][:, :3].tolist():
        sets.setdefault(owner, []).append((strings[key], strings[value]))
    groups: dict[tuple[tuple[str, str], ...], int] = {(): 0} if len(sets) < n else {}
    group_of = np.zeros(n, np.int64)
    for owner, pairs in sets.items():
        group_of[owner] = groups.setdefault(tuple(sorted(pairs)), len(groups))
    by_id = {g: group for group, g in groups.items()}
    ids, first = np.unique(group_of, return_index=True)
    order = np.argsort(group_of, kind="stable")
    cuts = np.searchsorted(group_of[order], ids)
    members = dict(zip(ids.tolist(), np.split(order, cuts[1:]), strict=True))
    kept = lab[~pair]
    out = []
    for g in ids[np.argsort(first)].tolist():  # parts in the order their first sample came
        rows = members[g]
        part = c.select(rows, values[rows], labels=kept)
        out.append((dict(by_id[g]), derived(env, part, strings=strings, salt=by_id[g])))
    return out
