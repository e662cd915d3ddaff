"""Take the README's screenshot of the demo (docs/demo.png): start `basam-hf demo`, pick a bundled sample in a
headless Chromium, draw a box (or click a point), press Run and save the page once both masks are shown.

    python scripts/demo_screenshot.py --model default --box 60 40 270 250 --output docs/demo.png

Needs what the demo's browser test needs: `pip install -e ".[dev]"` and Debian's `chromium` + `chromium-driver`
(`bash scripts/install_browser.sh`).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"basam-hf demo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"basam-hf demo did not answer on {url}")


def _click_pixel(driver, element, x: int, y: int) -> None:
    """Click the displayed image at original pixel `(x, y)`, whatever its displayed size."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    width, height, natural_width, natural_height = driver.execute_script(
        "const e = arguments[0], r = e.getBoundingClientRect(); return [r.width, r.height, e.naturalWidth, "
        "e.naturalHeight]",
        element,
    )
    offset_x = (x + 0.5) * width / natural_width - width / 2
    offset_y = (y + 0.5) * height / natural_height - height / 2
    ActionChains(driver).move_to_element_with_offset(element, round(offset_x), round(offset_y)).click().perform()


def take_screenshot(args: argparse.Namespace) -> Path:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    command = [sys.executable, "-m", "basam_hf.cli", "demo", "--model", args.model, "--port", str(port)]
    command += ["--host", "127.0.0.1"] + (["--size", str(args.size)] if args.size else [])
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(command, env=env)
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={args.width},{args.height}")
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, server)
        driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        wait = WebDriverWait(driver, args.timeout)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#basam-samples button.gallery-item"))[
            args.sample
        ].click()
        image = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#basam-input img"))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        prompt_box = driver.find_element(By.CSS_SELECTOR, "#basam-prompts textarea")
        if args.box:
            driver.find_element(By.XPATH, "//*[@id='basam-mode']//label[contains(., 'box')]").click()
            clicks = [args.box[:2], args.box[2:]]
        else:
            clicks = [args.point]
        for x, y in clicks:
            before = prompt_box.get_attribute("value")
            _click_pixel(driver, driver.find_element(By.CSS_SELECTOR, "#basam-input img"), x, y)
            wait.until(lambda d, before=before: prompt_box.get_attribute("value") != before)
        print(f"prompts: {json.loads(prompt_box.get_attribute('value'))}")
        driver.find_element(By.CSS_SELECTOR, "#basam-run").click()
        wait.until(lambda d: "IoU between the two masks" in d.find_element(By.CSS_SELECTOR, "#basam-scores").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#basam-off img"))
        time.sleep(1)  # let the images finish painting
        driver.execute_script("window.scrollTo(0, 0)")
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(output))
        return output
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="repo id, folder, or `default` (the embedded model)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--box", nargs=4, type=int, metavar=("X1", "Y1", "X2", "Y2"), help="box corners to click")
    prompt.add_argument("--point", nargs=2, type=int, metavar=("X", "Y"), default=[160, 160], help="object point")
    parser.add_argument("--sample", type=int, default=0, help="which bundled sample (0-based)")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    parser.add_argument("--output", default=str(REPO / "docs" / "demo.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the masks")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium"))
    parser.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    print(f"Saved {take_screenshot(parser.parse_args())}")


if __name__ == "__main__":
    main()
