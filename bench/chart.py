"""Draws bench/results.png from a results file written by bench/run:
grouped bars of the median req/s per scenario, one bar per server, one subplot
per process count, zibai highlighted. Runs in bench/venv (matplotlib, Agg).

    bench/venv/bin/python bench/chart.py results-latest.json results.png

Starved and failed results have no bar: they are not results. The y axis is
logarithmic, the scenarios span three orders of magnitude.
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

ZIBAI_COLOR = "#d62728"
PEER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8"]


def main(src, dst):
    data = json.load(open(src))
    cfg = data["config"]
    starve = cfg["starve_ms"]
    scenarios = cfg["scenarios"]
    servers = cfg["servers"]
    medians = {}  # (scenario, procs, server) -> median req/s of the valid runs
    groups = {}
    for r in data["runs"]:
        if (r["status"] == "ok" and r.get("probe_ms") is not None and "probe_error" not in r
                and r["probe_ms"] <= starve):
            groups.setdefault((r["scenario"], r["procs"], r["server"]), []).append(r["rps"])
    for key, values in groups.items():
        medians[key] = statistics.median(values)
    present = [s for s in servers if any(k[2] == s for k in medians)]
    procs_list = cfg["procs"]

    fig, axes = plt.subplots(len(procs_list), 1, figsize=(max(8, 1.6 * len(scenarios) + 3),
                                                          4.2 * len(procs_list)),
                             squeeze=False)
    width = 0.8 / max(1, len(present))
    peer_colors = iter(PEER_COLORS)
    colors = {s: ZIBAI_COLOR if s == "zibai" else next(peer_colors) for s in present}
    top = max(medians.values(), default=1)
    bottom = min(medians.values(), default=1)
    for ax, procs in zip(axes[:, 0], procs_list):
        for i, server in enumerate(present):
            xs, ys = [], []
            for j, scen in enumerate(scenarios):
                v = medians.get((scen, procs, server))
                if v:
                    xs.append(j + (i - (len(present) - 1) / 2) * width)
                    ys.append(v)
            zib = server == "zibai"
            ax.bar(xs, ys, width * 0.95, color=colors[server],
                   edgecolor="black" if zib else "none", linewidth=1.2 if zib else 0,
                   zorder=3 if zib else 2)
            if zib:
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 2),
                                ha="center", va="bottom", fontsize=7, rotation=90,
                                color=ZIBAI_COLOR, fontweight="bold")
        ax.set_yscale("log")
        ax.set_ylim(bottom / 2, top * 6)  # the same scale in both, room for zibai's labels
        ax.set_xlim(-0.5, len(scenarios) - 0.5)
        ax.set_xticks(range(len(scenarios)))
        ax.set_xticklabels(scenarios)
        ax.set_ylabel("median req/s (log)")
        plural = "process" if procs == 1 else "processes"
        ax.set_title(f"{procs} {plural}; wrk -t1 -c32 (sleep: -c64) -d{cfg['duration']}; "
                     f"RUNS={cfg['runs']}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
    handles = [Patch(facecolor=colors[s], edgecolor="black" if s == "zibai" else "none")
               for s in present]
    if present:  # every run starved or failed: nothing to label
        fig.legend(handles, present, loc="lower center",
                   ncol=len(present), fontsize=9, frameon=False)
    fig.suptitle("zibai and its peers: median requests/s per scenario "
                 "(starved or failed runs have no bar)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 if len(procs_list) == 1 else 0.03, 1, 1))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
