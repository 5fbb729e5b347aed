"""`xsc ui` on a machine with no browser: the link it prints is the dashboard, said as what to do with it."""

from __future__ import annotations

import webbrowser


def test_ui_with_no_browser_prints_the_link_and_says_to_open_it(thread_node, monkeypatch) -> None:
    node = thread_node()
    monkeypatch.setattr(webbrowser, "open", lambda url, *args, **kw: False)  # as on a machine with none
    shown = node.xsc("ui")
    assert shown.exit_code == 0, shown.output
    (link,) = shown.stdout.splitlines()
    assert link.startswith(f"{node.url}/ui/login?link="), shown.stdout
    (said,) = shown.stderr.splitlines()
    assert said.startswith("open this link in a browser") and "xsc:" not in said, said
