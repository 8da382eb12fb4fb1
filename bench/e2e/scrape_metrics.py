#!/usr/bin/env python3
"""Keeps the last /metrics scrape of each worker of a run, until the run ends.

    scrape_metrics.py --pid PID --work DIR --out PREFIX --workers N

Every second, for each worker i whose DIR/worker-i.metrics_port exists,
fetches http://127.0.0.1:<port>/metrics and replaces PREFIX-worker-i.metrics
with it (atomically: a scrape cut short by the worker's exit leaves the
previous one). Exits once process PID is gone.

One long-lived process instead of a shell loop: the loop's curl, cat and mv
forks cost ~6 % of the machine's CPU during a run (perf, world 2), taken from
the ranks under test and adding to their skew at every all-reduce.
"""

import argparse
import os
import time
import urllib.request


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scrape(work, out, rank):
    try:
        port = open(os.path.join(work, "worker-%d.metrics_port" % rank)).read().strip()
    except OSError:
        return
    if not port.isdigit():
        return
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=1) as r:
            text = r.read()
    except (OSError, ValueError):
        return
    path = "%s-worker-%d.metrics" % (out, rank)
    with open(path + ".tmp", "wb") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    while alive(args.pid):
        for rank in range(args.workers):
            scrape(args.work, args.out, rank)
        time.sleep(1)


if __name__ == "__main__":
    main()
