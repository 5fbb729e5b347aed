"""Headless Chromium (Debian's) driven by Playwright, for the dashboard's tests and bench.

Never `playwright install`: the browser is Debian's /usr/bin/chromium (scripts/ci-deps.sh installs it)."""

from __future__ import annotations

import importlib.util
import os
import shutil

CHROMIUM = os.environ.get("XSC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (install it with scripts/ci-deps.sh, or apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:  # found, not imported: its import costs a collection ~0.3 s
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


class Console:
    """Collects a page's JavaScript errors and console errors (a test fails on any)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page) -> None:
        page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def take(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors


def login_url(node) -> str:
    """A one-time login link to a node process's dashboard (`xsc ui --print-url`)."""
    done = node.xsc("ui", "--print-url")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def show(page, name: str) -> None:
    """Open a dashboard page and wait until its data is drawn."""
    page.goto(page.url.split("#")[0] + "#" + name)
    page.wait_for_selector(f"body[data-ready={name}]")
