#!/usr/bin/env python3
"""The operator crate's house rules (issue 23), checked in CI:
- no file of crates/operator/src over 700 lines of code (its `#[cfg(test)]` module apart);
- no function over 120 lines;
- no two files share a name (`mod.rs` apart: a wing is named by its folder);
- no two modules import each other, directly or in a loop (`use crate::…`, `super::…` and
  `crate::…` paths, read per file; a `mod.rs` re-exporting its own files with `pub use` does
  not import them, so a step never imports back from its wing's `mod.rs`).
Prints every breach and exits 1 if there is one."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "operator", "src")
MAX_FILE, MAX_FN = 700, 120
FN = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(const )?fn (\w+)")


def modules():
    """Module path (`reconcile::rollout`) → file, for every file of the crate's library."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs") or (folder == ROOT and name == "main.rs"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            found["::".join(rel)] = os.path.join(folder, name)
    return found


def code_of(text):
    """The file without its test module."""
    cut = text.find("\n#[cfg(test)]\nmod tests")
    return text if cut < 0 else text[:cut]


def imports(module, text, known):
    """The crate modules `module` refers to, resolved to the longest known module path."""
    out = set()
    here = module.split("::") if module else []
    # `use crate::a::{b, c::d}` and inline `crate::a::b::f` paths; `super::x` is relative.
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(::\{([^}]*(?:\{[^}]*\}[^}]*)*)\})?", text):
        base = here[:-1] if m.group(1) == "super" else []
        path = base + m.group(2).strip(":").split("::")
        heads = [path]
        if m.group(4):
            for part in re.split(r",(?![^{]*\})", m.group(4)):
                part = part.strip().split(" as ")[0]
                if part and part != "self":
                    heads.append(path + re.sub(r"::\{.*", "", part).split("::"))
        for p in heads:
            for n in range(len(p), 0, -1):
                cand = "::".join(p[:n])
                if cand in known and cand != module:
                    out.add(cand)
                    break
    return out


def cycles(graph):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return result


def shortest_cycle(graph, comp):
    """The shortest loop of imports through the component's first module."""
    start = comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        at = queue.pop(0)
        for nxt in sorted(graph.get(at, ())):
            if nxt == start:
                return paths[at] + [start]
            if nxt in comp and nxt not in paths:
                paths[nxt] = paths[at] + [nxt]
                queue.append(nxt)
    return comp


def main():
    breaches = []
    known = modules()
    graph = {}
    names = {}
    for module, path in sorted(known.items()):
        text = open(path).read()
        code = code_of(text)
        rel = os.path.relpath(path, os.path.join(ROOT, ".."))
        lines = code.count("\n")
        if lines > MAX_FILE:
            breaches.append(f"{rel}: {lines} lines of code (at most {MAX_FILE})")
        rows = text.split("\n")
        for i, row in enumerate(rows):
            m = FN.match(row)
            if not m:
                continue
            end = next((j for j in range(i + 1, len(rows)) if rows[j] == m.group(1) + "}"), None)
            if end is not None and end - i + 1 > MAX_FN:
                breaches.append(f"{rel}:{i + 1}: fn {m.group(6)} is {end - i + 1} lines (at most {MAX_FN})")
        stem = os.path.basename(path)
        if stem not in ("mod.rs", "lib.rs"):
            names.setdefault(stem, []).append(rel)
        # A wing's mod.rs re-exporting its own files (`pub use`) does not import them.
        if os.path.basename(path) in ("mod.rs", "lib.rs"):
            code = re.sub(r"(?m)^pub(\(crate\))? use [^;]*;", "", code)
        code = re.sub(r"//[^\n]*", "", code)  # doc links are not imports
        deps = imports(module, code, known)
        # A parent calls its files by their bare names (`claim::check`).
        for child in re.findall(r"(?m)^\s*(?:pub(?:\(crate\))? )?mod (\w+);", code):
            full = f"{module}::{child}" if module else child
            if full in known and re.search(rf"(?<!mod )\b{child}::", code):
                deps.add(full)
        graph[module] = deps
    for stem, paths in sorted(names.items()):
        if len(paths) > 1:
            breaches.append(f"file name {stem} used twice: {', '.join(paths)}")
    for comp in cycles(graph):
        breaches.append(f"modules import each other: {' → '.join(shortest_cycle(graph, comp))}")
    for b in breaches:
        print(b)
    if "--graph" in sys.argv:
        for m in sorted(graph):
            print(f"{m or 'lib'} → {', '.join(sorted(graph[m]))}")
    print(f"house-check: {len(known)} modules, {len(breaches)} breaches")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
