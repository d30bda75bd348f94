#!/usr/bin/env python3
"""Plots of the compare bench (scripts/bench.sh) as SVG, with the standard library only.

    scripts/bench-plot.py RESULTS.jsonl OUT_DIR

RESULTS.jsonl has one JSON object per N (the bench's --out). Writes
OUT_DIR/bench-throughput.svg (cold-start syncs/s of the operator and of the raw client
against N) and OUT_DIR/bench-memory.svg (operator peak RSS against the SecretSyncs it held,
with the 64 MiB target).
"""
import json
import math
import sys
from pathlib import Path

W, H = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 40, 50


def nice_max(v):
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def chart(title, xlabel, ylabel, series, hline=None):
    """series: [(name, colour, [(x, y), ...])]; x on a log scale."""
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts] + ([hline[1]] if hline else [])
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (x1 - x0) * 0.08
    x0, x1 = x0 - pad, x1 + pad
    ymax = nice_max(max(ys) * 1.1)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x):
        return LEFT + (math.log10(x) - x0) / (x1 - x0) * pw

    def py(y):
        return TOP + ph - y / ymax * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
        f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">{xlabel}</text>',
        f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + ph / 2})">{ylabel}</text>',
    ]
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{LEFT - 4}" y1="{py(y):.1f}" x2="{LEFT + pw}" y2="{py(y):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in sorted(set(xs)):
        out.append(f'<line x1="{px(x):.1f}" y1="{TOP + ph}" x2="{px(x):.1f}" y2="{TOP + ph + 4}" '
                   f'stroke="black"/>')
        out.append(f'<text x="{px(x):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{x:,}</text>')
    if hline:
        name, y = hline
        out.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + pw}" y2="{py(y):.1f}" '
                   f'stroke="#c00" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{LEFT + pw + 8}" y="{py(y) + 4:.1f}" fill="#c00">{name}</text>')
    for k, (name, colour, pts) in enumerate(series):
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>')
            out.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}" fill="{colour}">{y:,.0f}</text>')
        ly = TOP + 20 + 20 * k
        out.append(f'<line x1="{LEFT + pw + 8}" y1="{ly}" x2="{LEFT + pw + 28}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + pw + 32}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    results_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    runs = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    if not runs:
        sys.exit(f"{results_path}: no results")
    throughput = chart(
        "Cold start: SecretSyncs to Ready per second",
        "N (SecretSyncs, each its own OpenBao key)",
        "syncs/s",
        [
            ("raw client", "#888", [(r["n"], r["raw"]["syncs_per_s"]) for r in runs]),
            ("operator", "#1f6feb", [(r["n"], r["cold"]["syncs_per_s"]) for r in runs]),
        ],
    )
    memory = chart(
        "Operator peak RSS (VmHWM)",
        "SecretSyncs held (3 versioned Secrets for each of the N)",
        "MiB",
        [("operator", "#1f6feb",
          [(r["memory"]["syncs"], r["memory"]["hwm_kib"] / 1024) for r in runs])],
        hline=("64 MiB target", 64),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-throughput.svg").write_text(throughput)
    (out_dir / "bench-memory.svg").write_text(memory)
    print(f"plots: {out_dir / 'bench-throughput.svg'}, {out_dir / 'bench-memory.svg'}")


if __name__ == "__main__":
    main()
