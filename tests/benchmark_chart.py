"""Turn a benchmark results file into the docs' table and chart.

    python -m tests.benchmark_chart .bench/results.json docs/benchmarks

Everything shown in docs/benchmarks/ is generated here from the JSON results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _label(result: dict[str, Any]) -> str:
    if result["database"] == "none":
        return str(result["benchmark"])
    return f"{result['database']}: {result['setting']}"


def _pair(counts: dict[str, int] | None) -> str:
    return f"{counts['ours']} / {counts['stdlib']}" if counts else "-"


def markdown(document: dict[str, Any]) -> str:
    """One table per group (no database; each database), narrow enough to read."""
    env = document["environment"]
    lines = [
        f"Measured {env['date']} on {env['machine']}; Python {env['python']}, "
        f"Django {env['django']}; "
        + ", ".join(f"{name}: {version}" for name, version in env["databases"].items())
        + ".",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in document["results"]:
        groups.setdefault(r["database"], []).append(r)
    for database, results in groups.items():
        if database == "none":
            title, first = "Overhead, no database touched", "benchmark"
        else:
            title, first = f"{results[0]['units']:,} ORM tasks on {database}", "setting"
        lines += [
            "",
            f"**{title}**",
            "",
            f"| {first} | ours / stdlib | 95% interval (rounds) | target | peak connections "
            "| left after shutdown | health checks per unit |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            target, (low, high) = r["target"], r["interval"]
            name = f"{r['units']:,} {r['benchmark']}" if database == "none" else r["setting"]
            checks = "-" if r["checks_per_unit"] is None else f"{r['checks_per_unit']:.2f}"
            lines.append(
                f"| {name} | **{r['ratio']:.2f}x** | {low:.2f}-{high:.2f} ({len(r['ours'])}) "
                f"| {f'≤ {target:.2f}x' if target else '-'} | {_pair(r['peak'])} "
                f"| {_pair(r['final'])} | {checks} |"
            )
    lines += ["", "Connection counts read ours / stdlib."]
    return "\n".join(lines) + "\n"


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = document["results"]
    counted = [r for r in results if r["peak"]]  # the no-op runs open no connection
    # Stacked, not side by side: the docs column is narrow, and one label per row
    # must stay readable there.
    figure, (ratios, conns) = plt.subplots(
        2,
        1,
        figsize=(9, 0.3 * len(results) + 0.55 * len(counted) + 3),
        gridspec_kw={"height_ratios": [0.3 * len(results), 0.55 * len(counted)]},
    )
    ys = range(len(results))
    ratios.barh(
        ys,
        [r["ratio"] for r in results],
        color="#3b7dd8",
        xerr=[
            [r["ratio"] - r["interval"][0] for r in results],
            [r["interval"][1] - r["ratio"] for r in results],
        ],
        capsize=2,
    )
    for y, r in zip(ys, results, strict=True):
        target = r["target"]
        if target:
            ratios.plot([target, target], [y - 0.4, y + 0.4], color="#d8453b", lw=2)
        ratios.text(r["interval"][1] + 0.05, y, f"{r['ratio']:.2f}x", va="center", fontsize=9)
    ratios.axvline(1.0, color="black", lw=0.8)
    ratios.set_xscale("log")
    ticks = [0.5, 0.75, 1, 1.5, 2, 3, 5, 8]
    ratios.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ratios.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ratios.set_xlabel("median of rounds; black bar: its 95% interval; red mark: target")
    ratios.set_yticks(list(ys), [_label(r) for r in results], fontsize=9)
    ratios.invert_yaxis()
    ratios.set_title("Time: django-thread / stdlib", fontsize=11)

    height = 0.2
    cys = range(len(counted))
    for offset, (key, side, color) in enumerate(
        [
            ("peak", "ours", "#3b7dd8"),
            ("peak", "stdlib", "#9bb7e0"),
            ("final", "ours", "#2a9d5c"),
            ("final", "stdlib", "#d8453b"),
        ]
    ):
        positions = [y - 0.3 + offset * height for y in cys]
        values = [r[key][side] for r in counted]
        conns.barh(positions, values, height=height, color=color, label=f"{key}, {side}")
        for position, value in zip(positions, values, strict=True):
            # A zero bar is invisible: the number says it.
            conns.text(value + 0.05, position, str(value), va="center", fontsize=7)
    conns.set_yticks(list(cys), [_label(r) for r in counted], fontsize=9)
    conns.invert_yaxis()
    conns.set_xlabel("connections the server lists: peak during the run, left after shutdown")
    conns.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.05))
    conns.set_title("Server-side connections", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def publish(results: Path, target: Path) -> None:
    document = json.loads(results.read_text())
    target.mkdir(parents=True, exist_ok=True)
    (target / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (target / "results.md").write_text(markdown(document))
    chart(document, target / "results.png")
    print(f"published to {target}")


if __name__ == "__main__":
    publish(Path(sys.argv[1]), Path(sys.argv[2]))
