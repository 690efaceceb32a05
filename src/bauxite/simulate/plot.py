"""PNG charts for ``bauxite simulate --plot DIR``; matplotlib is imported only here, on demand."""

from __future__ import annotations

from pathlib import Path

from .engine import SimulationResult

WEEK_HOURS = 7 * 24


def write_plots(result: SimulationResult, directory: Path) -> list[Path]:
    """Write week.png (intensity per region and where traffic went) and carbon.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    config = result.config
    names = [c.name for c in config.clusters]
    hours = len(result.table[0])
    first = min(config.plot_week_start_day * 24, max(hours - WEEK_HOURS, 0))
    span = range(first, min(first + WEEK_HOURS, hours))
    x = list(span)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for cluster, values in zip(config.clusters, result.table, strict=True):
        top.plot(x, [values[h] for h in span], label=f"{cluster.name} ({cluster.trace})")
    threshold = config.routing.green_routing.threshold_gco2
    top.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="threshold")
    top.set_ylabel("gCO2eq/kWh")
    top.set_title("Grid intensity per region")
    top.legend(loc="upper right", fontsize="small")
    policy = "low_carbon" if "low_carbon" in result.policies else next(iter(result.policies))
    placed = result.policies[policy].hourly
    totals = [max(sum(placed[k][h] for k in range(len(names))), 1) for h in span]
    shares = [[placed[k][h] / t for h, t in zip(span, totals, strict=True)] for k in range(len(names))]
    bottom.stackplot(x, shares, labels=names)
    bottom.set_ylabel(f"share of requests ({policy})")
    bottom.set_xlabel("hour of the period")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper right", fontsize="small")
    week = directory / "week.png"
    fig.tight_layout()
    fig.savefig(week, dpi=100)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(8, 4))
    labels = [*result.policies, "greedy_hindsight", "bound"]
    kilograms = [r.carbon_g / 1000.0 for r in result.policies.values()] + [
        result.oracle.carbon_g / 1000.0,
        result.bound.carbon_g / 1000.0,
    ]
    axis.bar(labels, kilograms, color=["#888888"] * (len(result.policies) + 1) + ["#2a7d2a"])
    axis.set_ylabel("kg CO2e")
    axis.set_title("Carbon per policy")
    carbon = directory / "carbon.png"
    fig.tight_layout()
    fig.savefig(carbon, dpi=100)
    plt.close(fig)
    return [week, carbon]
