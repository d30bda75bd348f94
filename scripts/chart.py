#!/usr/bin/env python3
"""Lints and renders charts/secretsync with Helm's own Go library (helm-python-sdk), so no
helm binary is needed. Run with the repository's .venv/bin/python (scripts/setup.sh).

  chart.py lint [VALUES...]                  strict lint with the defaults and each values file
  chart.py render [-f VALUES] [--namespace NS] [--release NAME] [--set-json K=JSON]
                                             the rendered manifests as one YAML stream
  chart.py rbac [...same options]            the rendered RBAC objects as a JSON list
  chart.py docs                              fails when a value is missing from the chart README
  chart.py metrics --scrape FILE --selectors BIN
                                             fails when the dashboard or an alert names a metric,
                                             label or label value that FILE (a /metrics scrape)
                                             does not serve; BIN parses PromQL (scripts/tools.sh)
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "secretsync"
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
KUBE_VERSION = "v1.33.0"
REASONS = CHART.parent.parent / "crates" / "api" / "src" / "reason.rs"


def load_values(path):
    if path is None:
        return {}
    return helm.values_from_yaml(pathlib.Path(path).read_text()) or {}


def lint(paths):
    failed = False
    for path in [None, *paths]:
        report = helm.lint(
            CHART, load_values(path), strict=True, namespace="secretsync", kube_version=KUBE_VERSION
        )
        label = path or "default values"
        problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        errors = report.get("errors") or []
        for m in problems:
            print(f"lint {label}: {m.get('path')}: {m.get('error')}", file=sys.stderr)
        for e in errors:
            print(f"lint {label}: {e}", file=sys.stderr)
        if problems or errors:
            failed = True
        else:
            print(f"lint {label}: ok")
    return 1 if failed else 0


def leaf_paths(values, prefix=""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def check_docs():
    """Every value (or a parent documented as a whole, like `resources`) has a README row."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in leaf_paths(values):
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if not any(f"| `{p}` |" in readme for p in prefixes):
            missing.append(path)
    for path in missing:
        print(f"docs: {path} is not described in charts/secretsync/README.md", file=sys.stderr)
    if not missing:
        print("docs: every value is described in the chart README")
    return 1 if missing else 0


def render(args):
    """{template path: rendered text}, NOTES.txt and empty templates left out."""
    values = load_values(args.values)
    for expr in args.set_json or []:
        values = _merge(values, helm.parse_set_json(expr))
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
    return {
        path: text
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt") and any(yaml.safe_load_all(text))
    }


def _merge(base, override):
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def queries():
    """(where, PromQL, legend) of every dashboard target and alert rule in the chart."""
    dashboard = json.loads((CHART / "dashboards" / "secretsync.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f'dashboard panel "{panel["title"]}"', target["expr"], target.get("legendFormat", "")
    rules = yaml.safe_load((CHART / "alerts" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"], ""


def served(scrape):
    """{metric: {label: {values}}} of every sample in an OpenMetrics/text exposition."""
    sample = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    out = {}
    for line in scrape.splitlines():
        m = sample.match(line)
        if not m or line.startswith("#"):
            continue
        labels = out.setdefault(m.group(1), {})
        for name, value in label.findall(m.group(2) or ""):
            labels.setdefault(name, set()).add(value)
    return out


def check_metrics(args):
    """Every selector, matcher, grouping label and legend label of the dashboard and the alerts
    against what a running operator served: a renamed metric or label fails here, not on a
    user's empty panel or silent alert. A `reason` may also be any condition reason (the
    closed set in crates/api), as only some of them occur in one run."""
    series = served(pathlib.Path(args.scrape).read_text())
    reasons = set(re.findall(r'=> "([A-Za-z]+)"', REASONS.read_text()))
    found = list(queries())
    out = subprocess.run(
        [args.selectors],
        input="".join(json.dumps(expr) + "\n" for _, expr, _ in found),
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    problems = []
    for (where, _, legend), line in zip(found, out, strict=True):
        parsed = json.loads(line)
        if "error" in parsed:
            problems.append(f"{where}: PromQL does not parse: {parsed['error']}")
            continue
        metrics = []
        for sel in parsed.get("selectors") or []:
            metric = sel["metric"]
            if metric not in series:
                problems.append(f"{where}: {metric} is not served by /metrics")
                continue
            metrics.append(metric)
            for m in sel.get("matchers") or []:
                labels = series[metric]
                if m["name"] not in labels:
                    problems.append(f"{where}: {metric} has no label {m['name']}")
                    continue
                if m["type"] not in ("=", "=~"):
                    continue
                wanted = m["value"].split("|") if m["type"] == "=~" else [m["value"]]
                allowed = labels[m["name"]] | (reasons if m["name"] == "reason" else set())
                for value in wanted:
                    if value not in allowed:
                        problems.append(f'{where}: {metric} never has {m["name"]}="{value}"')
        for g in parsed.get("groupings") or []:
            for name in g["labels"]:
                for metric in g["metrics"]:
                    if metric in series and name not in series[metric]:
                        problems.append(f"{where}: groups by {name}, which {metric} does not have")
        for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            if not any(name in series[metric] for metric in metrics):
                problems.append(f"{where}: legend names {name}, a label none of its metrics has")
    for p in problems:
        print(f"metrics: {p}", file=sys.stderr)
    if not problems:
        print(f"metrics: {len(found)} dashboard queries and alerts use only served metrics and labels")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_lint = sub.add_parser("lint")
    p_lint.add_argument("values", nargs="*")
    sub.add_parser("docs")
    p_metrics = sub.add_parser("metrics")
    p_metrics.add_argument("--scrape", required=True)
    p_metrics.add_argument("--selectors", required=True)
    for name in ("render", "rbac"):
        p = sub.add_parser(name)
        p.add_argument("-f", "--values")
        p.add_argument("--namespace", default="secretsync")
        p.add_argument("--release", default="secretsync")
        p.add_argument("--set-json", action="append", help="KEY=JSON, as helm --set-json")
    args = parser.parse_args()
    if args.command == "lint":
        return lint(args.values)
    if args.command == "docs":
        return check_docs()
    if args.command == "metrics":
        return check_metrics(args)
    manifests = render(args)
    if args.command == "rbac":
        docs = [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]
        json.dump([d for d in docs if d.get("kind") in RBAC_KINDS], sys.stdout, indent=1)
        print()
    else:
        # As `helm template` prints it: comments (the reasons of the RBAC rules) included.
        for path, text in manifests.items():
            print(f"---\n# Source: {path}\n{text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
