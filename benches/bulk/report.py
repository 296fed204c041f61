"""The suite's one results writer: a markdown table per scenario, the
targets met or missed, and an SVG chart of tidex's ratios (plain Python, no
plotting library)."""
from html import escape

from harness import FLOOR, PEER, TIDEX

# The targets on the 2-core reference machine, checked every run.
CSV_TARGET = 1.5  # CSV -> Parquet: at least 1.5x the fastest peer
PG_FLOOR_TARGET = 1.6  # PostgreSQL -> Parquet: at most 1.6x the COPY floor
RSS_TARGET_KIB = 1 << 20  # peak RSS under 1 GiB in every tidex scenario


def ratios(scenario):
    """Per tidex row: (name, best peer name, best peer median / tidex median,
    tidex median / floor median). None where there is nothing to compare."""
    out = []
    for t in scenario.results:
        if t.role != TIDEX or not t.valid:
            continue
        peers = [r for r in scenario.results if r.role == PEER and r.group == t.group and r.valid]
        floors = [r for r in scenario.results if r.role == FLOOR and r.group == t.group and r.valid]
        best = min(peers, key=lambda r: r.median) if peers else None
        floor = min(floors, key=lambda r: r.median) if floors else None
        out.append((
            t.name,
            best.name if best else None,
            best.median / t.median if best else None,
            t.median / floor.median if floor else None,
        ))
    return out


def table(scenario):
    lines = [
        "| tool | role | median wall s | MB/s | rows/s | peak RSS MiB | vs best peer | x floor | check |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in scenario.results:
        name = r.name.replace("|", "\\|")
        if r.median is None:
            lines.append(f"| {name} | {r.role} | - | - | - | - | - | - | {r.check} |")
            continue
        peers = [p for p in scenario.results if p.role == PEER and p.group == r.group and p.valid]
        floors = [f for f in scenario.results if f.role == FLOOR and f.group == r.group and f.valid]
        best = min(p.median for p in peers) if peers else None
        floor = min(f.median for f in floors) if floors else None
        # vs best peer: above 1 means faster than the fastest peer.
        vs = f"{best / r.median:.2f}x" if best and r.role != FLOOR and r.valid else "-"
        xf = f"{r.median / floor:.2f}" if floor and r.valid else "-"
        mbs = f"{scenario.bytes / 1e6 / r.median:.0f}" if scenario.bytes else "-"
        rows = f"{scenario.rows / r.median:,.0f}" if scenario.rows else "-"
        rss = f"{r.peak_rss_kib / 1024:.0f}" if r.peak_rss_kib else "-"
        lines.append(f"| {name} | {r.role} | {r.median:.2f} | {mbs} | {rows} | {rss} | {vs} | {xf} | {r.check} |")
    return "\n".join(lines)


def targets(scenarios):
    """The targets, each with its measured value and met / missed / not measured."""
    by_key = {s.key: s for s in scenarios if not s.skipped}
    lines = []

    def line(text, ok):
        lines.append(f"- {text}: **{'met' if ok else 'missed'}**" if ok is not None else f"- {text}: not measured")

    csv = by_key.get("csv")
    r = ratios(csv) if csv else []
    if r and r[0][2] is not None:
        line(f"CSV -> Parquet at least {CSV_TARGET}x the fastest of DuckDB, Polars, pyarrow "
             f"({r[0][2]:.2f}x {r[0][1]})", r[0][2] >= CSV_TARGET)
    else:
        line(f"CSV -> Parquet at least {CSV_TARGET}x the fastest peer", None)

    pg = by_key.get("pg")
    r = ratios(pg) if pg else []
    if r and r[0][3] is not None:
        line(f"PostgreSQL -> Parquet at most {PG_FLOOR_TARGET}x the COPY floor ({r[0][3]:.2f}x)",
             r[0][3] <= PG_FLOOR_TARGET)
    else:
        line(f"PostgreSQL -> Parquet at most {PG_FLOOR_TARGET}x the COPY floor", None)
    if r and r[0][2] is not None:
        line(f"PostgreSQL -> Parquet faster than every peer ({r[0][2]:.2f}x {r[0][1]})", r[0][2] > 1.0)
    else:
        line("PostgreSQL -> Parquet faster than every peer", None)

    rss = [(s.title, t) for s in scenarios if not s.skipped for t in s.results
           if t.role == TIDEX and t.peak_rss_kib]
    if rss:
        worst_title, worst = max(rss, key=lambda x: x[1].peak_rss_kib)
        line(f"tidex peak RSS under 1 GiB in every scenario (max {worst.peak_rss_kib / 1024:.0f} MiB, "
             f"{worst_title})", all(t.peak_rss_kib < RSS_TARGET_KIB for _, t in rss))
    else:
        line("tidex peak RSS under 1 GiB in every scenario", None)
    return "\n".join(lines)


def svg_chart(scenarios):
    """Horizontal bars: tidex's speed relative to the fastest peer (above 1:
    tidex is faster) and to the floor (floor median / tidex median, at most
    1), one pair per tidex row."""
    bars = []
    for s in scenarios:
        if s.skipped:
            continue
        for name, best, vs_peer, x_floor in ratios(s):
            label = s.title if name == "tidex" else f"{s.title} ({name})"
            if vs_peer is not None:
                bars.append((label, f"vs fastest peer ({best})", vs_peer, "#2b6cb0", None))
            if x_floor is not None:
                bars.append((label, "vs floor (floor time / tidex time)", 1 / x_floor, "#a0aec0",
                             1 / PG_FLOOR_TARGET if s.key == "pg" else None))
    # Room for the longest label (about 7 px a character at 12 px).
    left = max(330, 24 + 7 * max((len(b[0]) for b in bars), default=0))
    width, bar_h, gap = left + 530, 22, 8
    top = 56
    height = top + len(bars) * (bar_h + gap) + 60
    vmax = max([b[2] for b in bars] + [CSV_TARGET, 1.0]) * 1.1
    scale = (width - left - 80) / vmax

    def x(v):
        return left + v * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">'
        "tidex speed relative to the fastest peer and to the floor (higher is better)</text>",
    ]
    if not bars:
        out.append(f'<text x="{width / 2}" y="{top + 10}" text-anchor="middle">no ratios to show</text>')
    y = top
    for label, what, v, colour, target in bars:
        out.append(f'<text x="{left - 8}" y="{y + 11}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<text x="{left - 8}" y="{y + 21}" text-anchor="end" fill="#555" font-size="10">'
                   f"{escape(what)}</text>")
        out.append(f'<rect x="{left}" y="{y}" width="{max(v * scale, 1):.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{x(v) + 4:.1f}" y="{y + 15}">{v:.2f}x</text>')
        if target:
            # The floor target of this scenario: the bar should reach it.
            out.append(f'<line x1="{x(target):.1f}" y1="{y - 3}" x2="{x(target):.1f}" y2="{y + bar_h + 3}" '
                       f'stroke="#c53030" stroke-width="2" stroke-dasharray="3,2"/>')
        y += bar_h + gap
    for v, dash, text, ty in ((1.0, "", "1x (as fast)", top - 10),
                              (CSV_TARGET, "4,3", f"{CSV_TARGET}x (CSV target)", y + 16)):
        out.append(f'<line x1="{x(v):.1f}" y1="{top - 6}" x2="{x(v):.1f}" y2="{y}" stroke="#c53030" '
                   f'stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{x(v):.1f}" y="{ty}" text-anchor="middle" fill="#c53030">{text}</text>')
    out.append(f'<text x="10" y="{y + 36}" fill="#555" font-size="11">Blue: fastest peer\'s time / '
               f"tidex's. Grey: the floor's time / tidex's; dashed tick: the PostgreSQL target "
               f"(at most {PG_FLOOR_TARGET}x the floor).</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
