"""Headless Chromium (Debian's ``chromium`` + ``chromedriver``) driven by Selenium: the web console's
tests and ``scripts/bench-web``.

The browser's mic is a WAV file (``--use-file-for-fake-audio-capture``, played once from
the moment the page opens the mic), media permission is granted without a prompt, and
nothing is downloaded: the driver and the browser are given explicitly, and Selenium
Manager is kept offline. Every call runs in a worker thread, bounded (:class:`BrowserTimeout`
naming what did not happen), so the board's event loop keeps running while the browser works.
Selenium comes with the ``dev`` extra.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for

CHROMIUM = os.environ.get("EDGEAGENT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGEAGENT_CHROMEDRIVER", "/usr/bin/chromedriver")


class BrowserTimeout(AssertionError):
    """The page did not do something in time (the message says what)."""


class Browser:
    """One headless Chromium window on a phone-sized screen."""

    def __init__(self, profile: Path, mic_wav: Path | None = None, *, width: int = 412, height: int = 915) -> None:
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver
        for exe in (CHROMIUM, CHROMEDRIVER):
            if not Path(exe).is_file():
                raise FileNotFoundError(f"{exe} is missing: run scripts/setup --dev (apt: chromium chromium-driver)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    f"--window-size={width},{height}", f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        if mic_wav is not None:
            opts.add_argument(f"--use-file-for-fake-audio-capture={mic_wav}%noloop")
        if os.geteuid() == 0:
            opts.add_argument("--no-sandbox")
        self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
        self.driver.set_script_timeout(20)
        self.driver.set_page_load_timeout(30)

    @classmethod
    async def open(cls, profile: Path, mic_wav: Path | None = None) -> Browser:
        return await wait_for(asyncio.to_thread(cls, profile, mic_wav), 60)

    async def call(self, fn: Any, *args: Any, timeout: float = 30.0) -> Any:
        try:
            return await wait_for(asyncio.to_thread(fn, *args), timeout)
        except asyncio.TimeoutError:
            raise BrowserTimeout(f"the browser did not finish {getattr(fn, '__name__', fn)} within {timeout:.0f} s") \
                from None

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def text(self, element_id: str) -> str:
        return str(await self.js(f"return document.getElementById({element_id!r}).textContent"))

    async def visible(self, element_id: str) -> bool:
        return bool(await self.js(f"return !document.getElementById({element_id!r}).closest('[hidden]')"))

    async def type_into(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        def do() -> None:
            el = self.driver.find_element(By.ID, element_id)
            el.clear()
            el.send_keys(text)

        await self.call(do)

    async def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        def do() -> None:
            el = self.driver.find_element(By.ID, element_id)
            # Clear of the sticky header, as a person would scroll to it.
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
            el.click()

        await self.call(do)

    async def until(self, script: str, what: str, timeout: float = 30.0, poll: float = 0.2) -> Any:
        """Poll ``script`` (a JS expression) until it is truthy; fail naming ``what``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.js(f"return ({script})")
            if value:
                return value
            if loop.time() > deadline:
                raise BrowserTimeout(f"the page showed no {what} within {timeout:.0f} s")
            await asyncio.sleep(poll)

    async def screenshot(self, path: Path) -> Path:
        ok = await self.call(self.driver.save_screenshot, str(path))
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        if not ok or size == 0:
            raise BrowserTimeout(f"no screenshot at {path}")
        return path

    async def quit(self) -> None:
        await self.call(self.driver.quit)

