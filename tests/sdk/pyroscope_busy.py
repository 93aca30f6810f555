"""A small program profiled by Pyroscope's own Python SDK (pyroscope-io), pushing to the URL given.

Run by tests/api/test_sdk_push.py: ``python pyroscope_busy.py URL SECONDS``. ``busy_leaf`` holds
most of the CPU, so the stored profile must name it; the loop runs under the dynamic tag
``phase=hot``, which the SDK sends as a sample label.
"""

import sys
import time

import pyroscope


def busy_leaf(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def work() -> int:
    return busy_leaf(200_000)


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    pyroscope.configure(application_name="pyapp", server_address=url, tags={"env": "test"}, upload_interval=2)
    end = time.time() + seconds
    with pyroscope.tag_wrapper({"phase": "hot"}):  # a sample label: profstore makes it a series label
        while time.time() < end:
            work()
    pyroscope.shutdown()


if __name__ == "__main__":
    main()
