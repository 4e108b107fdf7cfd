"""Headless Debian Chromium driven by Playwright, with a fake camera playing a .y4m file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
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
