"""The `xsc` command line.  Subcommands are imported lazily so `xsc --help` stays fast."""

from __future__ import annotations

import importlib

import click

from .output import run_cli

SUBCOMMANDS = {
    "node": ("xsc.cli.node", "node", "Run a node and see how it is doing."),
    "store": ("xsc.cli.store", "store", "Put, get, check, verify and repair files."),
    "compute": ("xsc.cli.compute", "compute", "Deploy wasm modules and invoke their functions."),
    "ledger": ("xsc.cli.ledger", "ledger", "Balances, history and verification of the signed ledger."),
    "allocation": ("xsc.cli.allocation", "allocation", "The mutual-recognition allocator and its simulator."),
    "peers": ("xsc.cli.peers", "peers", "The nodes this node knows: list, join, forget."),
    "health": ("xsc.cli.health", "health", "How reachable this node's peers are."),
    "market": ("xsc.cli.market", "market", "Asks, bids, clearing prices, this node's offer, deals, recognition."),
    "devnet": ("xsc.cli.devnet", "devnet", "Run a local network of nodes for trying things out."),
    "s3": ("xsc.cli.s3", "s3", "Serve S3 (boto3, rclone, AWS CLI, s3cmd) over this node's storage; access keys."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text without importing every subcommand module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="XSC_HOME", type=click.Path(file_okay=False),
              help="The node's data dir (default: $XSC_HOME, else ~/.xsc).")
@click.option("--node", "node_url", envvar="XSC_NODE", metavar="URL",
              help="The node's URL (default: the listen address in the data dir's config).")
@click.version_option(package_name="xsc", prog_name="xsc")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, node_url: str | None) -> None:
    """XSC: a peer-to-peer storage-and-compute node."""
    from .context import CliContext

    ctx.obj = CliContext(data_dir, node_url)


def main() -> None:
    run_cli(cli)
