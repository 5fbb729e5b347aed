"""`xsc allocation`: the mutual-recognition allocator (its simulator runs in-process, no node)."""

from __future__ import annotations

import click

from .output import Duration, emit_json, json_option
from .tables import key_values


@click.group("allocation")
def allocation() -> None:
    """The mutual-recognition allocator and its convergence simulator."""


@allocation.command("simulate")
@click.option("--participants", "-n", type=click.IntRange(2, 20_000), default=20, show_default=True,
              help="How many participants exchange commitments (events mode: at most 500).")
@click.option("--slots", "-m", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Slots per participant (each a capacity or a need slot, at random).")
@click.option("--seed", "-s", type=int, default=1, show_default=True,
              help="Seed of the random network (and of the message latencies in events mode).")
@click.option("--mode", type=click.Choice(["rounds", "events"]), default="rounds", show_default=True,
              help="rounds: every provider computes on the same receipts, round after round; "
                   "events: messages with random latencies, each participant recomputing on arrival.")
@click.option("--peers", type=click.IntRange(1, 1_000), default=None,
              help="Recognised peers per participant (default: 1 to max(5, min(50, (N - 1) / 3)) at random).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Rounds mode: processes computing the providers' side.")
@click.option("--max-rounds", type=click.IntRange(1, 100_000), default=1_000, show_default=True,
              help="Rounds mode: stop after this many rounds if the network has not gone quiet.")
@click.option("--max-time", "max_time_s", type=Duration("1h", least=1, most=86_400, whole=True), default="10m",
              show_default=True, help="Events mode: stop after this much simulated time if the exchange has not "
              "settled, 1s to 1d, e.g. 1h, 90s.")
@click.option("--traffic", is_flag=True, help="Rounds mode: measure the bytes each node sends per round.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE.png",
              help="Draw convergence (denominator change) and over-allocation per round to a PNG "
                   "(needs matplotlib: pip install 'xsc[plot]').")
@click.option("--fairness", "show_fairness", is_flag=True,
              help="Events mode: also list each recipient's share against its MR share.")
@json_option
def simulate(participants: int, slots: int, seed: int, mode: str, peers: int | None, workers: int,
             max_rounds: int, max_time_s: int, traffic: bool, plot_path: str | None, show_fairness: bool,
             as_json: bool) -> None:
    """Run the allocator among in-process participants until the network settles.

    Every participant gets random recognition, capacity and needs.  In rounds mode (the default)
    every provider divides its capacity by the receipts of the last round, then every recipient
    totals what it got and publishes its receipt; in events mode each participant recomputes
    whenever a peer's message reaches it.  Both run the functions a node runs
    (provider_round, recipient_round).  Prints the rounds to convergence, the over-allocation,
    the unmet need, and in rounds mode the time per round and peak memory."""
    from ..allocation import SimConfig

    if plot_path is not None:
        # Fail before a long run, not after it.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ..errors import PlotUnavailable

            raise PlotUnavailable("--plot needs matplotlib, which is not installed",
                                  hint="pip install 'xsc[plot]', or leave out --plot") from None
    if show_fairness and mode != "events":
        from ..errors import InvalidArgument

        raise InvalidArgument("--fairness is measured in events mode only", hint="add --mode events")
    config = SimConfig(participants, slots, seed, max_time_ms=max_time_s * 1000, peers=peers,
                       max_rounds=max_rounds, workers=workers, traffic=traffic)
    if mode == "rounds":
        from ..allocation.roundsim import RoundSimulation, plot_rounds

        result = RoundSimulation(config).run()
        if plot_path is not None:
            plot_rounds(result, plot_path)
        summary = result.summary()
        if as_json:
            summary["timeline"] = [s.__dict__ for s in result.timeline]
            summary["plot"] = plot_path
            emit_json(summary)
            return
        rows = [(k.replace("_", " "), "-" if v is None else v) for k, v in summary.items()]
        if plot_path is not None:
            rows.append(("plot", plot_path))
        key_values(rows)
        if not result.quiet:
            click.echo("xsc: warning: the network did not go quiet before --max-rounds", err=True)
        return
    from ..allocation import plot_simulation
    from ..allocation.core.simulate import Simulation

    result = Simulation(config).run()
    if plot_path is not None:
        plot_simulation(result, plot_path)
    summary = {"mode": "events", **result.summary()}
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
        from .tables import table

        table(["recipient", "tier-1 units", "share", "MR share", "share / MR share", "satisfied"],
              [(f["recipient"], f["tier1_units"], f["share"], f["mr_share"], f["ratio"],
                "yes" if f["satisfied"] else "no") for f in result.fairness],
              title="fairness")
    if not result.converged:
        click.echo("xsc: warning: the network did not converge before --max-time", err=True)
