"""The demo app (`basam-hf demo`): its prompt and prediction helpers, and the page itself driven by a headless
Chromium (Debian's `chromium` + `chromium-driver`, through selenium) against a tiny random model."""

import json
import os
import runpy
import sys
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import BA_OFF, save_tiny_model
from demo_browser import CHROMEDRIVER, CHROMIUM, chrome, click_pixel, start_demo, stop, wait_for_demo
from PIL import Image

from basam_hf import app
from basam_hf.app import BOX, NEGATIVE, POSITIVE, DemoModels, SizeRange, add_click, empty_prompts, predict, undo_click
from basam_hf.cli import main
from basam_hf.loading import load_model, load_processor
from basam_hf.metrics import binary_iou
from basam_hf.segment import segment_image

pytestmark = pytest.mark.usefixtures("single_thread")

# Screenshots of the page go here (gitignored); CI can collect them.
ARTIFACTS = Path(os.environ.get("BASAM_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
# Model seed 4 gives masks that are neither empty nor full for the sample below, so comparing pixels means something.
MODEL_SEED = 4
SIZE = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=MODEL_SEED)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return app.write_sample_images(tmp_path_factory.mktemp("samples"))[0]


def test_samples_are_the_synthetic_scenes_then_the_held_out_photos(tmp_path):
    pytest.importorskip("skimage")
    from basam_hf.composites import PHOTOS, load_photo

    paths = app.write_sample_images(tmp_path)
    assert [path.name for path in paths] == [f"synthetic_scene_{seed}.png" for seed, _ in app.SAMPLE_SCENES] + [
        f"photo_{name}.png" for name in app.SAMPLE_PHOTOS
    ]
    for name in app.SAMPLE_PHOTOS:  # never seen in training, pixel for pixel the package's photo
        assert next(photo.split for photo in PHOTOS if photo.name == name) == "test"
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"photo_{name}.png")), load_photo(name))
    assert app.write_sample_images(tmp_path) == paths  # written once


def test_clicks_make_points_and_one_box():
    prompts = add_click(empty_prompts(), 10.4, 20.6, POSITIVE)
    prompts = add_click(prompts, 30, 5, NEGATIVE)
    prompts = add_click(prompts, 50, 60, BOX)
    assert prompts["corner"] == [50, 60] and prompts["box"] is None
    prompts = add_click(prompts, 40, 70, BOX)
    assert prompts == {"points": [[10, 21], [30, 5]], "labels": [1, 0], "box": [40, 60, 50, 70], "corner": None}
    assert json.loads(app.prompts_text(prompts)) == {
        "points": [[10, 21], [30, 5]],
        "labels": [1, 0],
        "box": [40, 60, 50, 70],
    }
    # A second box replaces the first; undo removes a pending corner, then points, then the box.
    prompts = add_click(add_click(prompts, 0, 0, BOX), 5, 5, BOX)
    assert prompts["box"] == [0, 0, 5, 5]
    prompts = undo_click(add_click(prompts, 9, 9, BOX))
    assert prompts["corner"] is None and prompts["box"] == [0, 0, 5, 5]
    prompts = undo_click(undo_click(undo_click(prompts)))
    assert prompts == empty_prompts()
    with pytest.raises(ValueError, match="Unknown prompt mode"):
        add_click(prompts, 1, 1, "lasso")


def test_drawn_prompts_leave_the_image_unchanged():
    image = Image.new("RGB", (100, 80), (0, 0, 0))
    prompts = add_click(add_click(empty_prompts(), 20, 30, POSITIVE), 70, 40, NEGATIVE)
    drawn = app.draw_prompts(image, prompts)
    assert drawn.getpixel((20, 30)) == app.POSITIVE_COLOR and drawn.getpixel((70, 40)) == app.NEGATIVE_COLOR
    assert image.getpixel((20, 30)) == (0, 0, 0)


def test_read_image_refuses_bad_and_huge_files(tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Could not read photo.png as an image"):
        app.read_image(bad)
    big = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(big)
    with pytest.raises(ValueError, match=r"400x300 = 0.1 megapixels; this demo accepts up to 0.1"):
        app.read_image(big, max_pixels=100_000)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (40, 30), (200, 100, 50, 255)).save(rgba)
    image = app.read_image(rgba)
    assert image.mode == "RGB" and image.size == (40, 30) and image.getpixel((0, 0)) == (200, 100, 50)


def test_size_range_follows_the_model():
    assert SizeRange.for_model(1024, 16) == SizeRange(512, 2048, 1024, 16)
    sizes = SizeRange.for_model(64, 8)
    assert sizes == SizeRange(32, 128, 64, 8)
    assert sizes.check(96.0) == 96
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        sizes.check(100)
    with pytest.raises(ValueError, match="between 32 and 128"):
        sizes.check(136)
    with pytest.raises(ValueError, match="multiple of 16"):
        SizeRange.for_model(1024, 16, maximum=1000)


def test_predict_is_segment_image_with_ba_on_and_off(model_dir, sample):
    """The page's masks are the Python API's: the model itself, and the same weights loaded with BA off."""
    from basam_hf import BaSamModel

    models = DemoModels(model_dir)
    image = app.read_image(sample)
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    ba_off = BaSamModel.from_pretrained(model_dir, **BA_OFF).eval()
    steps = []
    prompts = add_click(empty_prompts(), 150, 170, POSITIVE)
    result = predict(models, image, prompts, SIZE, progress=lambda fraction, text: steps.append(fraction))
    expected, scores = segment_image(model, processor, image, points=[[150, 170]], labels=[1], size=SIZE)
    assert np.array_equal(result.ba_mask, expected[0]) and result.ba_score == pytest.approx(float(scores[0]))
    assert 0 < result.ba_mask.mean() < 1
    expected_off, _ = segment_image(ba_off, processor, image, points=[[150, 170]], labels=[1], size=SIZE)
    assert np.array_equal(result.off_mask, expected_off[0])
    assert steps == [0.0, 0.5, 1.0] and result.masks_iou == binary_iou(expected[0], expected_off[0])
    # A box with a background point, at another size and under other BA settings.
    prompts = add_click(add_click(add_click(empty_prompts(), 40, 30, BOX), 250, 280, BOX), 60, 60, NEGATIVE)
    settings = {"bias_mode": "none", "attention_scaling": "log_length"}
    result = predict(models, image, prompts, 96, settings)
    variant = BaSamModel.from_pretrained(model_dir, **settings).eval()
    expected, _ = segment_image(
        variant, processor, image, boxes=[[40, 30, 250, 280]], points=[[60, 60]], labels=[0], size=96
    )
    assert np.array_equal(result.ba_mask, expected[0])
    assert models.variant(**settings) is models.variant(**settings)  # loaded once
    assert models.variant(**models.settings) is models.model
    with pytest.raises(ValueError, match="Click at least one point"):
        predict(models, image, empty_prompts(), SIZE)
    png = app.mask_png(result.ba_mask)
    assert png.mode == "L" and set(np.unique(np.asarray(png))) <= {0, 255}
    assert "IoU between the two masks" in app.results_markdown(result)


def test_demo_command_without_gradio_names_the_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["demo", "--model", "default"]) == 1
    assert 'pip install "basam-hf[demo]"' in capsys.readouterr().err


def test_demo_command_without_default_model_says_so(monkeypatch, tmp_path, capsys):
    pytest.importorskip("gradio")
    import basam_hf.references

    monkeypatch.setattr(basam_hf.references, "DEFAULT_MODEL_DIR", tmp_path / "no-default")
    assert main(["demo", "--model", "default"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("basam-hf demo: error: The embedded default BA-SAM model is not in this installation")
    assert "Traceback" not in error


def test_space_folder_builds_the_demo(model_dir, monkeypatch):
    """examples/space is a Gradio Space: metadata naming app.py, which builds the page for BASAM_MODEL."""
    gr = pytest.importorskip("gradio")
    import yaml

    space = Path(__file__).resolve().parents[1] / "examples" / "space"
    metadata = yaml.safe_load((space / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert "basam-hf[demo]" in (space / "requirements.txt").read_text(encoding="utf-8")
    monkeypatch.setenv("BASAM_MODEL", model_dir)
    namespace = runpy.run_path(str(space / metadata["app_file"]))  # not __main__: builds without launching
    assert isinstance(namespace["demo"], gr.Blocks)


# ---------------------------------------------------------------------------------------------------------------------
# The page in a real browser


def _browser_or_skip():
    """Skip without Chromium, chromedriver, selenium or Gradio, except in CI (`.ci/run` installs them): fail there."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    for module in ("selenium", "gradio"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module}")
    if missing:
        reason = (
            f"demo browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver, or "
            'BASAM_TEST_INSTALL_BROWSER=1 bash scripts/test.sh, which does it as root; pip install -e ".[dev]")'
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def demo_server(model_dir, tmp_path):
    """`basam-hf demo` on a free localhost port, in its own process; stopped (terminate, then kill) afterwards."""
    _browser_or_skip()
    temp = tmp_path / "tmp"  # Gradio's cache and the app's files stay inside the test's folder
    temp.mkdir()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process, url = start_demo(
            ["--model", model_dir, "--max-pixels", "150000"],
            env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(temp)},
            output=log,
        )
    try:
        try:
            wait_for_demo(url, process, seconds=90)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log_path.read_text(errors='replace')}")
        yield url
    finally:
        stop(process)
        print(f"demo server log: {log_path}")


@pytest.fixture
def browser():
    driver = chrome(1400, 1100)
    try:
        yield driver
    finally:
        driver.quit()


def _fetch_png(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(BytesIO(response.read())))


def _toast_texts(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-text]")]


@pytest.mark.slow
def test_page_click_gives_the_python_api_mask(demo_server, browser, model_dir, sample, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from basam_hf import BaSamModel

    wait = WebDriverWait(browser, 60)
    browser.get(demo_server)
    samples = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#basam-samples button.gallery-item"))
    samples[0].click()  # synthetic_scene_1.png, the `sample` fixture
    image = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#basam-input img"))
    natural = wait.until(
        lambda d: d.execute_script(
            "const i = arguments[0]; return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null",
            image,
        )
    )
    original = app.read_image(sample)
    assert tuple(natural) == original.size

    # The page starts in box mode (app.DEFAULT_PROMPT_MODE); this test adds one object point.
    assert browser.find_element(By.CSS_SELECTOR, "#basam-mode input:checked").get_attribute("value") == app.BOX
    browser.find_element(By.XPATH, "//*[@id='basam-mode']//label[contains(., 'object point')]").click()
    click_pixel(browser, image, 150, 170)
    prompt_box = browser.find_element(By.CSS_SELECTOR, "#basam-prompts textarea")
    wait.until(lambda d: json.loads(prompt_box.get_attribute("value"))["points"])
    received = json.loads(prompt_box.get_attribute("value"))
    assert received["labels"] == [1] and received["box"] is None and len(received["points"]) == 1
    (x, y) = received["points"][0]
    assert abs(x - 150) <= 2 and abs(y - 170) <= 2, received  # the click lands on the intended pixel

    browser.find_element(By.CSS_SELECTOR, "#basam-run").click()
    links = wait.until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#basam-ba-file a[download]")
            and d.find_elements(By.CSS_SELECTOR, "#basam-off-file a[download]")
            and d.find_elements(By.CSS_SELECTOR, "#basam-ba img")
        )
    )
    assert links
    wait.until(lambda d: "IoU between the two masks" in d.find_element(By.CSS_SELECTOR, "#basam-scores").text)

    # The same prompt and size through the Python API.
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    expected, _ = segment_image(model, processor, original, points=[[x, y]], labels=[1], size=SIZE)
    ba_off = BaSamModel.from_pretrained(model_dir, **BA_OFF).eval()
    expected_off, _ = segment_image(ba_off, processor, original, points=[[x, y]], labels=[1], size=SIZE)
    assert 0 < expected[0].mean() < 1

    ba_png = _fetch_png(browser.find_element(By.CSS_SELECTOR, "#basam-ba-file a[download]").get_attribute("href"))
    off_png = _fetch_png(browser.find_element(By.CSS_SELECTOR, "#basam-off-file a[download]").get_attribute("href"))
    assert np.array_equal(ba_png, expected[0].astype(np.uint8) * 255)
    assert np.array_equal(off_png, expected_off[0].astype(np.uint8) * 255)
    shown = _fetch_png(browser.find_element(By.CSS_SELECTOR, "#basam-ba img").get_attribute("src"))
    assert np.array_equal(shown, np.asarray(app.mask_overlay(original, expected[0], received | {"corner": None})))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = ARTIFACTS / "demo.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    # Bad and huge files: a readable message in the page, no stack trace.
    upload = browser.find_element(By.CSS_SELECTOR, "#basam-input input[type=file]")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not pixels")
    upload.send_keys(str(bad))
    wait.until(lambda d: any("Could not read notes.png as an image" in text for text in _toast_texts(d)))
    browser.find_element(By.CSS_SELECTOR, "#basam-input button[aria-label='Clear']").click()
    big = tmp_path / "big.png"
    Image.new("RGB", (500, 400), (10, 20, 30)).save(big)
    browser.find_element(By.CSS_SELECTOR, "#basam-input input[type=file]").send_keys(str(big))
    wait.until(lambda d: any("500x400 = 0.2 megapixels" in text for text in _toast_texts(d)))
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
    assert browser.save_screenshot(str(ARTIFACTS / "demo-error.png"))
