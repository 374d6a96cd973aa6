#!/usr/bin/env python3
"""Draws the samples file of `fabric load --samples` as an SVG chart.

    scripts/soak_chart.py SAMPLES.jsonl OUT.svg [--max-growth PERCENT]

Four panels over the run's minutes: the server's RSS, its open file descriptors, the
store's size (database plus WAL) and the tasks finished per second (the final line's
rate, over the run's last fraction of an interval, left out). A dashed line marks
the tenth sample, where the warm-up ends. Prints the growth of RSS, FDs and store size
from the tenth sample to the last taken while the load ran (the line marked `final`, taken
after the load stopped, is drawn but not counted), as `fabric load` reports it; with
--max-growth, exits 1 when one grew more than PERCENT. Standard library only.
"""

import argparse
import json
import sys
from xml.sax.saxutils import escape

# The sample growth is measured from (1-based), as in `fabric load`.
GROWTH_FROM = 10
WIDTH = 900
PANEL_HEIGHT = 150
MARGIN_LEFT = 90
MARGIN_RIGHT = 30
TOP = 60
GAP = 40
MIB = 1024 * 1024

PANELS = [
    ("rss_bytes", "server RSS (MiB)", MIB, "#1f77b4"),
    ("open_fds", "server open file descriptors", 1, "#ff7f0e"),
    ("store_bytes", "store: database + WAL (MiB)", MIB, "#2ca02c"),
    ("tasks_per_second", "tasks finished per second", 1, "#d62728"),
]


def read_samples(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def growth(samples, key):
    """(last - tenth) / tenth over the samples taken while the load ran, or None."""
    running = [s for s in samples if not s.get("final")]
    if len(running) < GROWTH_FROM:
        return None
    first, last = running[GROWTH_FROM - 1].get(key), running[-1].get(key)
    if not first or last is None:
        return None
    return (last - first) / first


def nice_ceiling(value):
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above value."""
    if value <= 0:
        return 1
    power = 10 ** len(str(int(value))) / 10
    while True:
        for step in (1, 2, 2.5, 5, 10):
            if step * power >= value:
                return step * power
        power *= 10


def fmt(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}".rstrip("0").rstrip(".")


def panel(out, index, samples, key, title, scale, colour, x_of, x_max):
    top = TOP + index * (PANEL_HEIGHT + GAP)
    bottom = top + PANEL_HEIGHT
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    # The final line's interval is the tail of the run, often a fraction of a second: its
    # rate is left out.
    points = [
        (s["elapsed_seconds"], s[key] / scale)
        for s in samples
        if s.get(key) is not None and not (key == "tasks_per_second" and s.get("final"))
    ]
    y_max = nice_ceiling(max((y for _, y in points), default=1) * 1.1)

    def y_of(y):
        return bottom - y / y_max * PANEL_HEIGHT

    out.append(f'<text x="{left}" y="{top - 8}" class="title">{escape(title)}</text>')
    for i in range(5):
        value = y_max * i / 4
        y = y_of(value)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="ylabel">{fmt(value)}</text>')
    for minute in x_ticks(x_max):
        x = x_of(minute * 60)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
        if index == len(PANELS) - 1:
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" class="xlabel">{fmt(minute)}</text>')
    running = [s for s in samples if not s.get("final")]
    if len(running) >= GROWTH_FROM:
        x = x_of(running[GROWTH_FROM - 1]["elapsed_seconds"])
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="warm"/>')
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{PANEL_HEIGHT}" class="frame"/>')
    if points:
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    g = growth(samples, key) if key != "tasks_per_second" else None
    if g is not None:
        note = f"{g * 100:+.1f} % from sample {GROWTH_FROM} to the last"
        out.append(f'<text x="{right}" y="{top - 8}" class="note">{escape(note)}</text>')


def x_ticks(x_max_seconds):
    minutes = x_max_seconds / 60
    step = nice_ceiling(minutes / 8) if minutes > 0 else 1
    ticks, t = [], 0.0
    while t <= minutes + 1e-9:
        ticks.append(t)
        t += step
    return ticks


def chart(samples, title):
    x_max = max((s["elapsed_seconds"] for s in samples), default=60) or 60
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT

    def x_of(seconds):
        return left + seconds / x_max * (right - left)

    height = TOP + len(PANELS) * (PANEL_HEIGHT + GAP) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        "<style>.title{font-weight:bold}.note{text-anchor:end}.ylabel{text-anchor:end;fill:#555}"
        ".xlabel{text-anchor:middle;fill:#555}.grid{stroke:#ddd;stroke-width:1}"
        ".frame{fill:none;stroke:#888}.warm{stroke:#888;stroke-dasharray:4 3}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15" class="title">{escape(title)}</text>',
    ]
    for index, (key, label, scale, colour) in enumerate(PANELS):
        panel(out, index, samples, key, label, scale, colour, x_of, x_max)
    out.append(
        f'<text x="{(left + right) / 2}" y="{height - 2}" class="xlabel">minutes</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples")
    parser.add_argument("svg")
    parser.add_argument("--max-growth", type=float, metavar="PERCENT")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    samples = read_samples(args.samples)
    if not samples:
        sys.exit(f"{args.samples}: no samples")
    total = samples[-1].get("finished_total", 0)
    minutes = samples[-1]["elapsed_seconds"] / 60
    every = samples[0].get("interval_seconds") or 0
    title = args.title or (
        f"fabric load --mix: {total:,} tasks in {minutes:.1f} min, a sample every {every:.0f} s"
    )
    with open(args.svg, "w", encoding="utf-8") as f:
        f.write(chart(samples, title))
    failed = False
    for key, label in [("rss_bytes", "RSS"), ("open_fds", "open FDs"), ("store_bytes", "store")]:
        g = growth(samples, key)
        if g is None:
            print(f"{label}: growth not measured (fewer than {GROWTH_FROM} samples)")
            continue
        print(f"{label}: {g * 100:+.1f} % from sample {GROWTH_FROM} to the last")
        if args.max_growth is not None and g * 100 > args.max_growth:
            print(f"{label} grew more than {args.max_growth} %", file=sys.stderr)
            failed = True
    print(f"chart: {args.svg}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
