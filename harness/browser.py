"""A real browser for the tests: Debian's headless Chromium driven through chromium-driver (selenium).

Nothing is downloaded: the driver is ``/usr/bin/chromedriver`` (Debian's ``chromium-driver``), the browser
``/usr/bin/chromium``. As root Chromium needs ``--no-sandbox``. Screenshots are PNG files kept where the
test says (``screenshot``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("KIOSK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KIOSK_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Where the tests keep their screenshots (one folder per subject; not committed: .gitignore).
SHOTS = Path(os.environ.get("KIOSK_SCREENSHOTS", Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"))


def available() -> str | None:
    """Why no browser can be driven here, or None."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(exe):
            return f"{exe} is missing (scripts/bootstrap installs chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra)"
    return None


@contextlib.contextmanager
def chromium(width: int = 800, height: int = 480, javascript: bool = True):
    """A headless Chromium window of ``width`` × ``height`` CSS pixels; quit when the block ends."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


def screenshot(driver, path: Path) -> Path:
    """Save what the window shows as a PNG at ``path`` (folders made); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"the browser saved no screenshot at {path}")
    return path
