"""Drive `basam-hf demo` in Debian's headless Chromium: start the server on a free port, open a browser, click an
image pixel. Shared by the demo's browser test (`tests/test_app.py`) and `scripts/demo_screenshot.py`.

Needs `selenium` (`pip install -e ".[dev]"`) and Debian's `chromium` + `chromium-driver`
(`bash scripts/install_browser.sh`); the paths can be changed with `CHROMIUM_BINARY` and `CHROMEDRIVER`.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def free_port() -> int:
    """A localhost TCP port that is free now (for a server or launcher to bind next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(arguments: Sequence[str], *, env: dict | None = None, output=None) -> tuple[subprocess.Popen, str]:
    """Start `basam-hf demo ARGUMENTS` on a free localhost port (offline unless `HF_HUB_OFFLINE` says otherwise);
    returns the process and its URL, not yet waited for ([`wait_for_demo`]). `env` overrides environment variables;
    `output` (a file) receives stdout and stderr."""
    port = free_port()
    command = [sys.executable, "-m", "basam_hf.cli", "demo", *arguments, "--host", "127.0.0.1", "--port", str(port)]
    full_env = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **os.environ, **(env or {})}
    stderr = subprocess.STDOUT if output is not None else None
    return subprocess.Popen(command, env=full_env, stdout=output, stderr=stderr), f"http://127.0.0.1:{port}/"


def wait_for_demo(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    """Return once `url` answers; `RuntimeError` if the server exits first or does not answer within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"basam-hf demo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"basam-hf demo did not answer on {url} within {seconds:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate the server, killing it if it does not stop within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def chrome(width: int = 1400, height: int = 1100):
    """A headless Chromium driven by selenium (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def click_pixel(driver, image, x: int, y: int) -> None:
    """Click the centre of pixel `(x, y)` of a displayed `<img>` (in its natural size), whatever its displayed size."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
    width, height, natural_width, natural_height = driver.execute_script(
        "const e = arguments[0], r = e.getBoundingClientRect(); "
        "return [r.width, r.height, e.naturalWidth, e.naturalHeight]",
        image,
    )
    offset_x = (x + 0.5) * width / natural_width - width / 2
    offset_y = (y + 0.5) * height / natural_height - height / 2
    ActionChains(driver).move_to_element_with_offset(image, round(offset_x), round(offset_y)).click().perform()
