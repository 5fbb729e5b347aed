"""The dashboard's browser tests share one headless Chromium per module."""

from __future__ import annotations

import pytest

from tests.support.browser import launch


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()
