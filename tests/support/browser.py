"""A real headless Chromium driven by Selenium, for the web dashboard's tests.

Debian's ``chromium`` and ``chromium-driver`` (scripts/bootstrap.sh installs them as root);
Selenium is handed both paths, so Selenium Manager never tries to download a browser or a
driver (the machines reach no such host).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1440, 900)


def chromium_paths() -> tuple[str, str] | str:
    """(browser, driver), or why there is none."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        return f"no {missing} on PATH (as root: scripts/bootstrap.sh installs Debian's chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/bootstrap.sh installs the test dependencies)"
    return browser, driver


@contextmanager
def headless_chromium(browser: str, driver: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach out
    options = Options()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    # The browser's console (CSP violations, script errors), read by the tests.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()


def wait_until(driver: Any, check: Callable[[Any], Any], timeout: float = 30, what: str = "") -> Any:
    """``check(driver)``'s first truthy value (Selenium's WebDriverWait, with a message)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check, what or "condition")


def console_errors(driver: Any) -> list[str]:
    """What the page logged as errors (a CSP violation, an uncaught exception), less the
    browser's note of every 4xx answer (the API's refusals are the page's to show)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
