"""Headless Debian Chromium driven by Playwright, with a fake camera playing a .y4m file."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The page's effect menu is filled from GET /effects.
OPTIONS_LOADED = "document.querySelectorAll('#effect option').length > 3"
PageFactory = Callable[..., Page]
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)


def require_chromium() -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        )


@contextmanager
def chromium(fake_camera: Path | None = None) -> Iterator[Browser]:
    """A headless Chromium; with `fake_camera`, getUserMedia plays that .y4m file."""
    require_chromium()
    flags = list(BASE_FLAGS)
    if fake_camera is not None:
        flags += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_camera}",
        ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_opener(browser: Browser, base_url: str, path: str) -> Iterator[PageFactory]:
    """open(query="", width=1000, height=800): `path` in a fresh browser context, once the
    effect menu is loaded; every context is closed at the end of the block."""
    contexts = []

    def _open(query: str = "", width: int = 1000, height: int = 800) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{base_url}{path}{query}")
        page.wait_for_function(OPTIONS_LOADED)
        return page

    try:
        yield _open
    finally:
        for context in contexts:
            context.close()


def save_download(page: Page, selector: str, name: str, into: Path) -> Path:
    """Click `selector`, check the download is offered as `name`, save it to `into`."""
    with page.expect_download() as download_info:
        page.click(selector)
    download = download_info.value
    assert download.suggested_filename == name
    download.save_as(into)
    return into
