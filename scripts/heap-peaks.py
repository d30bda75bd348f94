#!/usr/bin/env python3
"""Where the operator's peak heap went, from a heaptrack recording (scripts/bench.sh --heaptrack).

    scripts/heap-peaks.py FOLDED [TOP]

FOLDED is `heaptrack_print --flamegraph-cost-type peak -F FOLDED` output: one stack per
line ("frame;frame;... bytes"). Each stack is charged to its innermost two frames from
secretsync or kube-runtime/kube-client, so the table reads as "which of our caches and
steps held the memory at the peak". Standard library only.
"""
import collections
import re
import sys


def clean(frame):
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("..", "::"),
                 ("_$u7b$$u7b$closure$u7d$$u7d$", "{closure}")):
        frame = frame.replace(a, b)
    return frame


def main():
    folded, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    by_site = collections.Counter()
    for line in open(folded, encoding="utf-8", errors="replace"):
        stack, _, cost = line.rstrip().rpartition(" ")
        ours = [clean(f) for f in stack.split(";")
                if "secretsync" in f or "kube_runtime" in f or "kube_client" in f]
        by_site[" <- ".join(reversed(ours[-2:])) or "(outside our code)"] += int(cost)
    total = sum(by_site.values())
    print(f"peak heap {total / 2**20:.1f} MiB, by where it was allocated:")
    for site, cost in by_site.most_common(top):
        print(f"{cost / 2**20:8.1f} MiB {100 * cost / total:5.1f}%  {site[:160]}")


if __name__ == "__main__":
    main()
