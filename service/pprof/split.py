"""Split a pushed profile by its samples' string labels, as Pyroscope does with what its SDKs push.

Pyroscope's SDKs put dynamic tags (``pyroscope.tag_wrapper``, ``wrapWithLabels``) on samples, not
on the series, and Pyroscope turns them into series labels: one profile per distinct label set,
so ``{service_name="app", phase="hot"}`` selects them like any tag. ``span_id`` stays on the
samples (``profile_id`` is renamed to it): span profiles select samples by it, and a series per
span would be unbounded. Numeric labels stay on the samples too.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from service.pprof import profile_pb2 as pb

__all__ = ["SPAN_ID", "split_by_sample_labels"]

SPAN_ID = "span_id"
PROFILE_ID = "profile_id"


def split_by_sample_labels(raw: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(extra series labels, uncompressed pprof bytes) per label set; the input itself when no sample
    carries a string label other than ``span_id`` (nothing is re-encoded then)."""
    p = pb.Profile()
    try:
        p.ParseFromString(raw)
    except DecodeError:
        return [({}, raw)]  # not protobuf: a legacy text profile, which has no sample labels
    strings = [s.decode("utf-8", "replace") for s in p.string_table]
    span = _index(strings, SPAN_ID)
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    renamed = False
    for i, sample in enumerate(p.sample):
        pairs: list[tuple[str, str]] = []
        for label in sample.label:
            name = strings[label.key] if 0 <= label.key < len(strings) else ""
            if name == PROFILE_ID:
                if span < 0:
                    strings.append(SPAN_ID)
                    p.string_table.append(SPAN_ID.encode())
                    span = len(strings) - 1
                label.key = span
                renamed = True
            elif label.str and name and name != SPAN_ID:
                pairs.append((name, strings[label.str] if label.str < len(strings) else ""))
        groups.setdefault(tuple(sorted(pairs)), []).append(i)
    if len(groups) == 1 and () in groups:
        return [({}, p.SerializeToString() if renamed else raw)]
    out = []
    samples = list(p.sample)
    for group, members in groups.items():
        part = pb.Profile()
        part.CopyFrom(p)
        del part.sample[:]
        moved = {k for k, _ in group}
        for i in members:
            s = part.sample.add()
            s.CopyFrom(samples[i])
            kept = [lb for lb in s.label if not (lb.str and 0 <= lb.key < len(strings) and strings[lb.key] in moved)]
            del s.label[:]
            s.label.extend(kept)
        out.append((dict(group), part.SerializeToString()))
    return out


def _index(strings: list[str], name: str) -> int:
    try:
        return strings.index(name)
    except ValueError:
        return -1
