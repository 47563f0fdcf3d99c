"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.tally import Tally, TallyRecorder
from tests.test_page import CHROMIUM, CHROMIUM_ARGS

_TALLY = pytest.StashKey[Tally]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="run the load and fault tests at full size (make soak), not the short variant make test runs",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TALLY] = Tally()


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_TALLY].write()


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> TallyRecorder:
    """Rows of the reliability table (tests/tally.py), kept for the whole run."""
    return request.config.stash[_TALLY].for_test(request.node.nodeid)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    """True under `make soak`: load and fault tests run at their full size and length."""
    return bool(request.config.getoption("--soak"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
