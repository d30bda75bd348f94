#!/usr/bin/env python3
"""docs/reference/ documents every CRD field, reason, event, metric and CLI verb.

Extracts from the code what users see, and fails naming each item that docs/reference/
does not mention, with the file it should be in:

  - every field path of the CRDs (crds/*.yaml, generated from crates/api/src)
      -> secretsync.md (SecretSync), clustersecretsync.md (ClusterSecretSync; its
         spec.template.spec.* in secretsync.md) or stores.md (SecretStore, ClusterSecretStore)
  - every condition type and `Reason` (crates/api/src/reason.rs, and every `Reason::X`
    or `reason: "..."` literal written in crates/operator/src or crates/providers/src)
      -> conditions.md
  - every event reason and its type (Normal/Warning): the constants of `reason::event`
    and every `Event { type_, reason }` built anywhere under crates/operator/src
      -> events.md, in a table row that also says the type
  - every Prometheus series registered anywhere under crates/operator/src, with its
    labels -> metrics.md, in a table row that also names each label
  - every `kubectl secretsync` verb, alias and long flag (crates/cli/src/cli.rs) and exit
    code (crates/cli/src/error.rs) -> cli.md
  - every operator flag and environment variable (the clap `Parser` found anywhere under
    crates/operator/src) -> operator.md
  - every label, annotation and finalizer key (crates/api/src/labels.rs) -> labels.md
  - guarantees.md has `## Guarantee N: ...` with an `<a id="guarantee-N">` anchor for
    N = 1..9, and every `guarantees.md#guarantee-N` cited in the code exists
  - every table in docs/reference/ and README.md is well formed (a header row, a
    delimiter row with as many cells, a blank line before it)

crates/operator/src is scanned recursively by pattern, so files may move within it.
Standard library only (Python 3.11). Exit 0 when everything is documented, 1 otherwise.
`--list` prints what was extracted.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "docs" / "reference"
OPERATOR_SRC = ROOT / "crates" / "operator" / "src"
PROVIDERS_SRC = ROOT / "crates" / "providers" / "src"
API_SRC = ROOT / "crates" / "api" / "src"
CLI_SRC = ROOT / "crates" / "cli" / "src"
GUARANTEES = range(1, 10)


# --------------------------------------------------------------------------------------
# A YAML subset: what serde_yaml writes for the CRDs (block mappings and sequences, plain,
# quoted and block scalars). Enough to walk openAPIV3Schema; not a general parser.


def _scalar(text: str):
    text = text.strip()
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if text.startswith('"') and text.endswith('"'):
        return bytes(text[1:-1], "utf-8").decode("unicode_escape")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~", ""):
        return None
    if text == "[]":
        return []
    if text == "{}":
        return {}
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


class _Lines:
    def __init__(self, text: str):
        self.lines = [
            line
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and line.strip() != "---"
        ]
        self.i = 0

    def peek(self):
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i]
        return len(line) - len(line.lstrip(" ")), line.strip()


def _block_scalar(lines: _Lines, indent: int, style: str) -> str:
    out = []
    while lines.i < len(lines.lines):
        raw = lines.lines[lines.i]
        if raw.strip() and len(raw) - len(raw.lstrip(" ")) <= indent:
            break
        out.append(raw)
        lines.i += 1
    if not out:
        return ""
    cut = min(len(line) - len(line.lstrip(" ")) for line in out if line.strip())
    body = [line[cut:] for line in out]
    return (" " if style.startswith(">") else "\n").join(body)


def _parse(lines: _Lines, indent: int):
    first = lines.peek()
    if first is None:
        return None
    if first[1].startswith("- ") or first[1] == "-":
        return _parse_seq(lines, first[0])
    return _parse_map(lines, first[0])


def _value(lines: _Lines, rest: str, indent: int):
    if rest in ("|", "|-", "|+", ">", ">-", ">+"):
        return _block_scalar(lines, indent, rest)
    if rest:
        return _scalar(rest)
    nxt = lines.peek()
    if nxt is None:
        return None
    # serde_yaml writes a sequence under a key at the key's own indentation.
    if nxt[0] > indent or (nxt[0] == indent and nxt[1].startswith("- ")):
        return _parse(lines, nxt[0])
    return None


_KEY = re.compile(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^:]+?):(?:\s+(.*))?$""")


def _parse_map(lines: _Lines, indent: int) -> dict:
    out: dict = {}
    while (nxt := lines.peek()) is not None:
        ind, text = nxt
        if ind < indent or (ind == indent and text.startswith("- ")):
            break
        if ind > indent:
            raise ValueError(f"unexpected indentation at line {lines.i}: {text!r}")
        m = _KEY.match(text)
        if not m:
            raise ValueError(f"not a mapping entry: {text!r}")
        lines.i += 1
        out[_scalar(m.group(1))] = _value(lines, (m.group(2) or "").strip(), ind)
    return out


def _parse_seq(lines: _Lines, indent: int) -> list:
    out = []
    while (nxt := lines.peek()) is not None:
        ind, text = nxt
        if ind != indent or not (text.startswith("- ") or text == "-"):
            break
        rest = text[1:].strip()
        if not rest:
            lines.i += 1
            out.append(_parse(lines, ind + 2))
        elif _KEY.match(rest) and not rest.startswith(("'", '"')) or (
            rest.startswith(("'", '"')) and _KEY.match(rest) and rest.rstrip().endswith(":")
        ):
            # A mapping that starts on the dash line: re-read it as if indented.
            lines.lines[lines.i] = " " * (ind + 2) + rest
            out.append(_parse_map(lines, ind + 2))
        else:
            lines.i += 1
            out.append(_scalar(rest))
    return out


def load_yaml(text: str):
    return _parse(_Lines(text), 0)


# --------------------------------------------------------------------------------------
# What the code says users see.


@dataclass
class Item:
    what: str  # "CRD field", "condition reason", ...
    name: str  # as it must appear in the docs
    source: str  # where it was found
    doc: str  # the docs/reference file it belongs in
    also: list[str] = field(default_factory=list)  # words the same table row must hold
    row: bool = False  # must be in a table row (`| ... |`)
    arg: bool = False  # a flag: `--flag` or `--flag VALUE` in backticks


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def rust_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.rs") if p.is_file())


def without_tests(text: str) -> str:
    """The file up to its `#[cfg(test)] mod ...` (tests sit at the end by convention)."""
    m = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\(\w+\))?\s+)?mod\s", text, re.M)
    return text[: m.start()] if m else text


def crd_fields() -> list[Item]:
    items = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = load_yaml(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        doc = {"SecretSync": "secretsync.md", "ClusterSecretSync": "clustersecretsync.md"}.get(
            kind, "stores.md"
        )
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            for path_name in schema_paths(schema, ""):
                # A ClusterSecretSync's template spec is a SecretSync spec, documented there.
                if kind == "ClusterSecretSync" and path_name.startswith("spec.template.spec."):
                    inner = "spec." + path_name.removeprefix("spec.template.spec.")
                    items.append(Item("CRD field", inner, f"{rel(path)} ({kind})", "secretsync.md"))
                    continue
                items.append(Item("CRD field", path_name, f"{rel(path)} ({kind})", doc))
    return dedupe(items)


def schema_paths(schema: dict, prefix: str):
    """Every field path below `schema`: `spec.data[].remoteRef.key`, maps as `.<key>`."""
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from schema_paths_of(sub, path)


def schema_paths_of(sub: dict, path: str):
    if not isinstance(sub, dict):
        return
    if sub.get("properties"):
        yield from schema_paths(sub, path)
    items = sub.get("items")
    if isinstance(items, dict):
        yield from schema_paths_of(items, path + "[]")
    extra = sub.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("properties") or extra.get("items")):
        yield from schema_paths_of(extra, path + ".<key>")


def reasons() -> list[Item]:
    items = []
    src = API_SRC / "reason.rs"
    text = src.read_text()
    enum = re.search(r"pub enum Reason\s*\{(.*?)\n\}", text, re.S)
    if not enum:
        sys.exit(f"reference-check: no `enum Reason` in {rel(src)}")
    body = re.sub(r"//[^\n]*", "", enum.group(1))
    for variant in re.findall(r"^\s*([A-Z]\w*)\s*,", body, re.M):
        items.append(Item("condition reason", variant, rel(src), "conditions.md"))
    for string in re.findall(r'Reason::\w+\s*=>\s*"([^"]+)"', text):
        items.append(Item("condition reason", string, rel(src) + " (as_str)", "conditions.md"))
    cond = re.search(r"pub mod condition\s*\{(.*?)\n\}", text, re.S)
    for value in re.findall(r'const \w+: &str = "([^"]+)"', cond.group(1) if cond else ""):
        items.append(Item("condition type", value, rel(src), "conditions.md"))
    for root in (OPERATOR_SRC, PROVIDERS_SRC, CLI_SRC):
        for path in rust_files(root):
            code = without_tests(path.read_text())
            for variant in re.findall(r"\bReason::([A-Z]\w*)", code):
                items.append(Item("condition reason", variant, rel(path), "conditions.md"))
            # Reasons written as strings into conditions or target statuses (events apart:
            # their reasons are checked against events.md).
            for literal in re.findall(r'\breason:\s*(?:Some\()?"([A-Z][A-Za-z]+)"', without_events(code)):
                items.append(Item("condition reason", literal, rel(path), "conditions.md"))
    return dedupe(items)


def event_constants() -> dict[str, str]:
    text = (API_SRC / "reason.rs").read_text()
    mod = re.search(r"pub mod event\s*\{(.*?)\n\}", text, re.S)
    if not mod:
        sys.exit("reference-check: no `pub mod event` in crates/api/src/reason.rs")
    return dict(re.findall(r'const (\w+): &str = "([^"]+)"', mod.group(1)))


def events() -> list[Item]:
    consts = event_constants()
    src = rel(API_SRC / "reason.rs")
    types: dict[str, set[str]] = {value: set() for value in consts.values()}
    where: dict[str, str] = {value: src for value in consts.values()}
    for path in rust_files(OPERATOR_SRC):
        code = without_tests(path.read_text())
        for m in re.finditer(r"\bEvent\s*\{", code):
            body = balanced(code, m.end() - 1)
            type_m = re.search(r"type_:\s*(?:[\w:]*::)?EventType::(\w+)", body)
            reason_m = re.search(r"\breason:\s*(.*?)\n\s*\w+:(?!:)", body, re.S)
            if not type_m or not reason_m:
                continue
            expr = reason_m.group(1)
            names = [consts[c] for c in re.findall(r"event::([A-Z_]+)", expr) if c in consts]
            names += re.findall(r'"([A-Z][A-Za-z]+)"', expr)
            for name in names:
                types.setdefault(name, set()).add(type_m.group(1))
                where.setdefault(name, rel(path))
    items = []
    for name in sorted(types):
        also = sorted(types[name])
        items.append(Item("event reason", name, where[name], "events.md", also=also, row=True))
    return items


def without_events(code: str) -> str:
    """`code` with the bodies of `Event { ... }` constructions taken out."""
    out, at = [], 0
    for m in re.finditer(r"\bEvent\s*\{", code):
        if m.start() < at:
            continue
        out.append(code[at : m.end()])
        at = m.end() + len(balanced(code, m.end() - 1)) + 1
    out.append(code[at:])
    return "".join(out)


def balanced(text: str, open_at: int) -> str:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return text[open_at + 1 :]


def metrics() -> list[Item]:
    items = []
    for path in rust_files(OPERATOR_SRC):
        code = without_tests(path.read_text())
        if ".register" not in code:
            continue
        prefix_m = re.search(r'Registry::with_prefix\("([^"]+)"\)', code)
        prefix = prefix_m.group(1) + "_" if prefix_m else ""
        label_structs = {
            name: re.findall(r"^\s*(?:pub\s+)?(\w+):", body, re.M)
            for name, body in re.findall(r"struct (\w+)\s*\{(.*?)\}", code, re.S)
        }
        calls = re.finditer(r"\.register(_with_unit)?\(\s*\"([a-z0-9_]+)\",(.*?)\);", code, re.S)
        for call in calls:
            with_unit, name, rest = call.group(1), call.group(2), call.group(3)
            unit = ""
            if with_unit:
                unit_m = re.search(r"Unit::(\w+)", rest)
                unit = "_" + (unit_m.group(1).lower() if unit_m else "")
            kind, labels = metric_kind(code, rest, label_structs)
            suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
            full = prefix + name + unit + suffix
            items.append(Item("metric", full, rel(path), "metrics.md", also=[kind] + labels, row=True))
    return dedupe(items)


def metric_kind(code: str, rest: str, label_structs: dict) -> tuple[str, list[str]]:
    if "Info::new" in rest:
        return "info", re.findall(r'\(\s*"(\w+)"\s*,', rest)
    var_m = re.search(r"(\w+)\.clone\(\)", rest)
    if not var_m:
        return "unknown", []
    # `let x = Counter::default();` or a struct field initialised as `x: Counter::default(),`
    let_m = re.search(rf"let {var_m.group(1)}\s*=\s*(.*?);", code, re.S) or re.search(
        rf"^\s*{var_m.group(1)}:\s*(\w.*?),\s*$", code, re.M
    )
    expr = let_m.group(1) if let_m else ""
    labels: list[str] = []
    fam = re.search(r"Family(?:::)?<\s*(\w+)\s*,\s*(\w+)\s*>", expr)
    if fam:
        labels = label_structs.get(fam.group(1), [])
        base = fam.group(2)
    else:
        base = (re.match(r"\s*(\w+)", expr) or re.match("", "")).group(0).strip()
    kind = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}.get(base, "unknown")
    return kind, labels


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower()


def cli() -> list[Item]:
    items = []
    src = CLI_SRC / "cli.rs"
    text = without_tests(src.read_text())
    command = re.search(r"pub enum Command\s*\{(.*?)\n\}", text, re.S)
    if not command:
        sys.exit(f"reference-check: no `enum Command` in {rel(src)}")
    body = command.group(1)
    for m in re.finditer(r"^    (?:#\[[^\n]*\]\n    |///[^\n]*\n    )*([A-Z]\w*)\b", body, re.M):
        items.append(Item("CLI verb", kebab(m.group(1)), rel(src), "cli.md"))
    for alias in re.findall(r'visible_alias\s*=\s*"([^"]+)"', body):
        items.append(Item("CLI verb alias", alias, rel(src), "cli.md"))
    for flag in long_flags(text):
        items.append(Item("CLI flag", flag, rel(src), "cli.md", arg=True))
    err = CLI_SRC / "error.rs"
    for name, code in re.findall(r"pub const (EXIT_\w+): i32 = (\d+);", err.read_text()):
        items.append(Item("CLI exit code", code, f"{rel(err)} ({name})", "cli.md", row=True))
    items.append(Item("CLI exit code", "0", rel(ROOT / "crates/cli/src/lib.rs"), "cli.md", row=True))
    return dedupe(items)


def long_flags(text: str) -> list[str]:
    """`--flag` of every clap field: `long = "x"`, or the field name in kebab case."""
    flags = []
    for m in re.finditer(r"#\[arg\(([^\]]*?)\)\]\s*(?:///[^\n]*\n\s*|#\[[^\n]*\]\s*)*(?:pub\s+)?(\w+):", text, re.S):
        args, field_name = m.group(1), m.group(2)
        explicit = re.search(r'\blong\s*=\s*"([^"]+)"', args)
        if explicit:
            flags.append("--" + explicit.group(1))
        elif re.search(r"\blong\b", args):
            flags.append("--" + field_name.replace("_", "-"))
    return flags


def operator_flags() -> list[Item]:
    items = []
    for path in rust_files(OPERATOR_SRC):
        text = without_tests(path.read_text())
        if "derive(Parser" not in text:
            continue
        for flag in long_flags(text):
            items.append(Item("operator flag", flag, rel(path), "operator.md", arg=True))
        for env in re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', text):
            items.append(Item("operator environment variable", env, rel(path), "operator.md"))
        for env in re.findall(r'env::var\("([A-Z0-9_]+)"\)', text):
            items.append(Item("operator environment variable", env, rel(path), "operator.md"))
    if not items:
        sys.exit(f"reference-check: no clap Parser found under {rel(OPERATOR_SRC)}")
    return dedupe(items)


def label_keys() -> list[Item]:
    src = API_SRC / "labels.rs"
    items = []
    for value in re.findall(r'pub const \w+: &str = "([^"]+)"', src.read_text()):
        items.append(Item("label, annotation or finalizer", value, rel(src), "labels.md"))
    return dedupe(items)


def dedupe(items: list[Item]) -> list[Item]:
    seen: dict[tuple[str, str, str], Item] = {}
    for item in items:
        seen.setdefault((item.doc, item.what, item.name), item)
    return list(seen.values())


# --------------------------------------------------------------------------------------
# Checks.


def documented(item: Item, docs: dict[str, str]) -> str | None:
    """None when documented, else why not."""
    text = docs.get(item.doc)
    if text is None:
        return f"docs/reference/{item.doc} is missing"
    needle = f"`{item.name}`"
    if item.arg:
        found = re.search(rf"`{re.escape(item.name)}[ =`]", text)
        return None if found else f"{needle} does not appear"
    if item.row:
        rows = [line for line in text.splitlines() if line.lstrip().startswith("|") and needle in line]
        if not rows:
            return f"no table row names {needle}"
        if item.also and not any(all(word_in(w, row) for w in item.also) for row in rows):
            return f"its table row must also say {', '.join(item.also)}"
        return None
    return None if needle in text else f"{needle} does not appear"


def word_in(word: str, row: str) -> bool:
    return re.search(rf"(?<![A-Za-z_]){re.escape(word)}(?![A-Za-z_])", row, re.I) is not None


def check_guarantees(docs: dict[str, str]) -> list[str]:
    problems = []
    text = docs.get("guarantees.md", "")
    for n in GUARANTEES:
        if not re.search(rf"^## Guarantee {n}: \S", text, re.M):
            problems.append(f"guarantees.md: no heading `## Guarantee {n}: …`")
        if f'<a id="guarantee-{n}"></a>' not in text:
            problems.append(f'guarantees.md: no anchor `<a id="guarantee-{n}"></a>`')
    for path in rust_files(ROOT / "crates") + sorted((ROOT / "docs").rglob("*.md")):
        for m in re.finditer(r"guarantees\.md#guarantee-(\d+)", path.read_text(errors="replace")):
            if int(m.group(1)) not in GUARANTEES:
                problems.append(f"{rel(path)} cites guarantee {m.group(1)}, which does not exist")
    return problems


def check_tables(path: Path) -> list[str]:
    """GitHub renders a table only from a header row, then a delimiter row with as many
    cells, after a blank line (or a heading); a row above its header breaks it."""
    problems = []
    lines = path.read_text().splitlines()
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not line.lstrip().startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            i += 1
        block = [b.strip() for b in lines[start:i]]
        where = f"{rel(path)}:{start + 1}"
        if len(block) < 2 or not re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", block[1]):
            problems.append(f"{where}: a table needs a header row, then a delimiter row (|---|)")
            continue
        header, delimiter = cells(block[0]), cells(block[1])
        if len(header) != len(delimiter):
            problems.append(f"{where}: header has {len(header)} cells, delimiter {len(delimiter)}")
        for n, row in enumerate(block[2:], start=start + 3):
            if re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", row):
                problems.append(f"{rel(path)}:{n}: a second delimiter row")
            elif len(cells(row)) > len(header):
                problems.append(f"{rel(path)}:{n}: {len(cells(row))} cells under a {len(header)}-cell header")
        before = lines[start - 1].strip() if start else ""
        if before and not before.startswith("#") and not lines[start].startswith(" "):
            problems.append(f"{where}: a table needs a blank line before it")
    return problems


def cells(row: str) -> list[str]:
    """GitHub splits cells at every unescaped `|`, inside code spans too."""
    parts = re.split(r"(?<!\\)\|", row.strip())
    return parts[1:-1] if row.strip().endswith("|") else parts[1:]


def main() -> int:
    extracted = (
        crd_fields()
        + reasons()
        + events()
        + metrics()
        + cli()
        + operator_flags()
        + label_keys()
    )
    if "--list" in sys.argv:
        for item in extracted:
            extra = f"  [{', '.join(item.also)}]" if item.also else ""
            print(f"{item.doc:16} {item.what:32} {item.name}{extra}  ({item.source})")
        return 0
    docs = {p.name: p.read_text() for p in sorted(REF.glob("*.md"))} if REF.is_dir() else {}
    problems = []
    for item in extracted:
        why = documented(item, docs)
        if why:
            problems.append(
                f"missing {item.what} `{item.name}` (from {item.source}): "
                f"document it in docs/reference/{item.doc}: {why}"
            )
    problems += check_guarantees(docs)
    for path in sorted(REF.glob("*.md")) + [ROOT / "README.md"]:
        problems += check_tables(path)
    counts: dict[str, int] = {}
    for item in extracted:
        counts[item.what] = counts.get(item.what, 0) + 1
    summary = ", ".join(f"{what}: {n}" for what, n in sorted(counts.items()))
    if problems:
        for problem in problems:
            print(f"reference-check: {problem}")
        print(f"reference-check: FAILED: {len(problems)} problems ({summary} checked)")
        return 1
    print(f"reference-check: docs/reference documents all {len(extracted)} items ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
