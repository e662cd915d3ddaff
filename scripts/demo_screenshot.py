"""Take the README's screenshot of the demo (docs/demo.png): start `basam-hf demo`, pick a bundled sample in a
headless Chromium, draw a box (or click a point), press Run and save the page once both masks are shown.

    python scripts/demo_screenshot.py --model default --box 60 40 270 250 --output docs/demo.png

Needs what the demo's browser test needs: `pip install -e ".[dev]"` and Debian's `chromium` + `chromium-driver`
(`bash scripts/install_browser.sh`); `CHROMIUM_BINARY` and `CHROMEDRIVER` point elsewhere (`tests/demo_browser.py`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

# The browser helpers live with the demo's browser test, which uses them too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from demo_browser import chrome, click_pixel, start_demo, stop, wait_for_demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def take_screenshot(args: argparse.Namespace) -> Path:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, url = start_demo(["--model", args.model] + (["--size", str(args.size)] if args.size else []))
    driver = None
    try:
        wait_for_demo(url, server)
        driver = chrome(args.width, args.height)
        wait = WebDriverWait(driver, args.timeout)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#basam-samples button.gallery-item"))[
            args.sample
        ].click()
        image = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#basam-input img"))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        prompt_box = driver.find_element(By.CSS_SELECTOR, "#basam-prompts textarea")
        mode = "box" if args.box else "object point"
        driver.find_element(By.XPATH, f"//*[@id='basam-mode']//label[contains(., '{mode}')]").click()
        clicks = [args.box[:2], args.box[2:]] if args.box else [args.point]
        for x, y in clicks:
            before = prompt_box.get_attribute("value")
            click_pixel(driver, driver.find_element(By.CSS_SELECTOR, "#basam-input img"), x, y)
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
        stop(server)


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
    print(f"Saved {take_screenshot(parser.parse_args())}")


if __name__ == "__main__":
    main()
