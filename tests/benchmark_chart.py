"""Turn a benchmark results file into the docs' table and chart.

    python -m tests.benchmark_chart .bench/results.json docs/benchmarks

Everything shown in docs/benchmarks/ is generated here from the JSON results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {  # the ratios we hold ourselves to (see docs/benchmarks.md)
    ("no-op tasks", ""): 1.10,
    ("short threads", ""): 1.10,
    ("ORM tasks", "CONN_MAX_AGE=None"): 1.03,
    ("ORM tasks", "CONN_MAX_AGE=60"): 1.03,
    ("ORM tasks", "native pool (CONN_MAX_AGE=0)"): 1.15,
}


def _label(result: dict[str, Any]) -> str:
    if result["database"] == "none":
        return str(result["benchmark"])
    return f"{result['database']}: {result['setting']}"


def markdown(document: dict[str, Any]) -> str:
    env = document["environment"]
    lines = [
        f"Measured {env['date']} on {env['machine']}; Python {env['python']}, "
        f"Django {env['django']}; "
        + ", ".join(f"{name}: {version}" for name, version in env["databases"].items())
        + ".",
        "",
        "| benchmark | database | setting | units | ours / stdlib (median) | spread "
        "| target | peak connections ours / stdlib | left after shutdown ours / stdlib "
        "| health checks per unit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in document["results"]:
        target = TARGETS.get((r["benchmark"], r["setting"]))
        peak = f"{r['peak']['ours']} / {r['peak']['stdlib']}" if r["peak"] else "-"
        final = f"{r['final']['ours']} / {r['final']['stdlib']}" if r["final"] else "-"
        checks = "-" if r["checks_per_unit"] is None else f"{r['checks_per_unit']:.2f}"
        lines.append(
            f"| {r['benchmark']} | {r['database']} | {r['setting'] or '-'} | {r['units']} "
            f"| **{r['ratio']:.2f}x** | {r['ratio_min']:.2f}-{r['ratio_max']:.2f} "
            f"| {f'≤ {target:.2f}x' if target else '-'} | {peak} | {final} | {checks} |"
        )
    return "\n".join(lines) + "\n"


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = document["results"]
    labels = [_label(r) for r in results]
    figure, (ratios, conns) = plt.subplots(
        1,
        2,
        figsize=(13, 0.42 * len(results) + 1.6),
        sharey=True,
        gridspec_kw={"width_ratios": [3, 2]},
    )
    ys = range(len(results))
    ratios.barh(
        ys,
        [r["ratio"] for r in results],
        color="#3b7dd8",
        xerr=[
            [r["ratio"] - r["ratio_min"] for r in results],
            [r["ratio_max"] - r["ratio"] for r in results],
        ],
        capsize=2,
    )
    for y, r in zip(ys, results, strict=True):
        target = TARGETS.get((r["benchmark"], r["setting"]))
        if target:
            ratios.plot([target, target], [y - 0.4, y + 0.4], color="#d8453b", lw=2)
        ratios.text(r["ratio_max"] + 0.05, y, f"{r['ratio']:.2f}x", va="center", fontsize=8)
    ratios.axvline(1.0, color="black", lw=0.8)
    ratios.set_xscale("log")
    ticks = [0.5, 0.75, 1, 1.5, 2, 3, 5, 8]
    ratios.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ratios.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ratios.set_xlabel("time, django_thread / stdlib (median of rounds; bar: spread; red: target)")
    ratios.set_yticks(list(ys), labels, fontsize=8)
    ratios.invert_yaxis()

    height = 0.2
    for offset, (key, side, color) in enumerate(
        [
            ("peak", "ours", "#3b7dd8"),
            ("peak", "stdlib", "#9bb7e0"),
            ("final", "ours", "#2a9d5c"),
            ("final", "stdlib", "#d8453b"),
        ]
    ):
        conns.barh(
            [y - 0.3 + offset * height for y in ys],
            [r[key].get(side, 0) if r[key] else 0 for r in results],
            height=height,
            color=color,
            label=f"{key} connections, {side}",
        )
    conns.set_xlabel("server-side connections during / after each run")
    conns.legend(fontsize=7, loc="lower right")
    figure.suptitle("django-thread vs the stdlib", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
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
