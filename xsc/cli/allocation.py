"""`xsc allocation`: the mutual-recognition allocator (its simulator runs in-process, no node)."""

from __future__ import annotations

import click

from .output import emit_json, json_option, key_values


@click.group("allocation")
def allocation() -> None:
    """The mutual-recognition allocator and its convergence simulator."""


@allocation.command("simulate")
@click.option("--participants", "-n", type=click.IntRange(2, 500), default=20, show_default=True,
              help="How many participants exchange commitments.")
@click.option("--slots", "-m", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Slots per participant (each a capacity or a need slot, at random).")
@click.option("--seed", "-s", type=int, default=1, show_default=True,
              help="Seed of the random network and of the message latencies (same seed, same run).")
@click.option("--max-time", "max_time_s", type=click.IntRange(1, 86_400), default=600, show_default=True,
              help="Stop after this many simulated seconds if the exchange has not settled.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE.png",
              help="Draw convergence over time to a PNG (needs matplotlib: pip install 'xsc[plot]').")
@click.option("--fairness", "show_fairness", is_flag=True, help="Also list each recipient's share against its MR share.")
@json_option
def simulate(participants: int, slots: int, seed: int, max_time_s: int, plot_path: str | None,
             show_fairness: bool, as_json: bool) -> None:
    """Run the event-driven exchange among in-process participants until it settles.

    Every participant gets random recognition, capacity and needs; each recomputes its
    allocation whenever a peer's commitment or allocation reaches it.  Prints the rounds to
    convergence, the total over-allocation, the unmet need and fairness (each recipient's share
    of tier-1 units against its share of mutual recognition)."""
    from ..allocation import plot_simulation, simulate as run

    if plot_path is not None:
        # Fail before a long run, not after it.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ..errors import PlotUnavailable

            raise PlotUnavailable("--plot needs matplotlib, which is not installed",
                                  hint="pip install 'xsc[plot]', or leave out --plot") from None
    result = run(participants, slots, seed, max_time_ms=max_time_s * 1000)
    if plot_path is not None:
        plot_simulation(result, plot_path)
    summary = result.summary()
    if as_json:
        summary["recipients"] = result.fairness
        summary["plot"] = plot_path
        emit_json(summary)
        return
    fair = summary.pop("fairness")
    rows = [(k.replace("_", " "), "-" if v is None else v) for k, v in summary.items()]
    rows += [("fairness " + k.replace("_", " "), "-" if v is None else v) for k, v in fair.items()]
    if plot_path is not None:
        rows.append(("plot", plot_path))
    key_values(rows)
    if show_fairness:
        from .output import table

        table(["recipient", "tier-1 units", "share", "MR share", "share / MR share", "satisfied"],
              [(f["recipient"], f["tier1_units"], f["share"], f["mr_share"], f["ratio"],
                "yes" if f["satisfied"] else "no") for f in result.fairness],
              title="fairness")
    if not result.converged:
        click.echo("xsc: warning: the network did not converge before --max-time", err=True)
