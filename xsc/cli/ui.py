"""`xsc ui`: open the node's dashboard in a browser, logged in by a one-time link."""

from __future__ import annotations

import click

from .output import emit_json, json_option


@click.command()
@click.option("--print-url", is_flag=True, help="Print the login link instead of opening a browser.")
@json_option
@click.pass_obj
def ui(obj, print_url: bool, as_json: bool) -> None:
    """Open the node's dashboard: a one-time login link, good for two minutes.

    \b
    xsc ui                 open it in the default browser
    xsc ui --print-url     print it (for a browser elsewhere, or a script)"""
    answer = obj.client().request("POST", "/v1/ui/login-link")
    url = obj.node_url() + answer["path"]
    if as_json:
        emit_json({**answer, "url": url})
        return
    if print_url:
        click.echo(url)
        return
    import webbrowser

    if not webbrowser.open(url):  # a headless machine: the printed link is the dashboard, no error
        click.echo(url)
        click.echo("open this link in a browser (none was found on this machine); it works once, for two minutes",
                   err=True)
        return
    click.echo("opened the dashboard in your browser (the link works once, for two minutes)")
