#!/usr/bin/env python3
"""Keeps the shared cargo target directory from growing without bound.

Every CI run builds a clean clone at a new path, and cargo names the workspace crates'
artifacts by a hash that includes the path: each run leaves a full set of them behind
(several GB). This keeps, per artifact name and kind, the newest KEEP files in
`deps/` and in `incremental/`, and deletes the rest (cargo rebuilds whatever it misses).

    scripts/prune-target.py [TARGET_DIR]   (default: $CARGO_TARGET_DIR or
                                            ~/.cache/secretsync/target)
"""

import os
import re
import shutil
import sys
from collections import defaultdict

KEEP = 4
HASHED = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{16})(?P<ext>\..+)?$")


def lstat(path):
    """The entry's stat, or None once it is gone: a build running beside the prune (another
    checkout sharing the target) removes its temporary files as it goes."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def newest_first(paths):
    stats = [(p, lstat(p)) for p in paths]
    present = [(p, s) for p, s in stats if s is not None]
    return [p for p, _ in sorted(present, key=lambda e: e[1].st_mtime, reverse=True)]


def remove(path):
    size = 0
    if os.path.isdir(path) and not os.path.islink(path):
        for root, _, files in os.walk(path):
            size += sum(s.st_size for s in map(lstat, (os.path.join(root, f) for f in files)) if s)
        shutil.rmtree(path, ignore_errors=True)
    else:
        stat = lstat(path)
        size = stat.st_size if stat else 0
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return size


def prune(directory, key, keep):
    if not os.path.isdir(directory):
        return 0
    groups = defaultdict(list)
    for entry in os.listdir(directory):
        k = key(entry)
        if k is not None:
            groups[k].append(os.path.join(directory, entry))
    freed = 0
    for paths in groups.values():
        for stale in newest_first(paths)[keep:]:
            freed += remove(stale)
    return freed


def deps_key(entry):
    m = HASHED.match(entry)
    return (m["name"], m["ext"] or "") if m else None


def incremental_key(entry):
    # <crate>-<base36 hash>
    name, _, suffix = entry.rpartition("-")
    return name if name and suffix.isalnum() else None


def main():
    target = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("CARGO_TARGET_DIR")
        or os.path.expanduser("~/.cache/secretsync/target")
    )
    freed = 0
    for profile in ("debug", "release"):
        base = os.path.join(target, profile)
        freed += prune(os.path.join(base, "deps"), deps_key, KEEP)
        freed += prune(os.path.join(base, "incremental"), incremental_key, KEEP)
    print(f"prune-target: freed {freed / 2**30:.1f} GiB in {target}")


if __name__ == "__main__":
    main()
