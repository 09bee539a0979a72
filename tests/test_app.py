"""The demo (app.py) in a real browser: Debian's headless Chromium, driven by Selenium, against the app
started on a loopback port; its numbers are predict.py's for the same photo and checkpoint.

WRINKLE_DEMO_CHECKPOINT=CKPT WRINKLE_DEMO_SCREENSHOT=docs/app_screenshot.png also saves the page with
its result there (how the README's screenshot was taken: the quickstart's checkpoint, mesh skin).
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config import config_to_dict, load_config
from engine.checkpoint import model_state, save_checkpoint
from engine.cli import InputError
from engine.segment_photos import predict_folder
from face.regions import REGIONS
from tests.conftest import PROJECT_ROOT
from unet import build_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PHOTO = "grace_hopper.jpg"
FACE_OPTIONS = ["--align", "ffhq", "--skin", "mesh"]  # real photos: FFHQ crop and mesh skin, so regions have figures


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory) -> Path:
    """WRINKLE_DEMO_CHECKPOINT, or the quickstart recipe at 64 px with random weights (the figures need
    not be good, only equal to predict.py's)."""
    if os.environ.get("WRINKLE_DEMO_CHECKPOINT"):
        return Path(os.environ["WRINKLE_DEMO_CHECKPOINT"])
    cfg = load_config(PROJECT_ROOT / "configs" / "quickstart.yaml", ["data.image_size=64"])
    path = tmp_path_factory.mktemp("demo") / "demo.pt"
    save_checkpoint(path, {"model": model_state(build_model(cfg.model)), "config": config_to_dict(cfg), "threshold": 0.5})
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"app.py did not serve {url} within {seconds} s")


@pytest.fixture(scope="module")
def app_url(demo_checkpoint, tmp_path_factory):
    """app.py on a free loopback port, as a user starts it."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), GRADIO_ANALYTICS_ENABLED="False")
    command = [sys.executable, str(PROJECT_ROOT / "app.py"), "--checkpoint", str(demo_checkpoint), "--port", str(port), *FACE_OPTIONS]
    work = tmp_path_factory.mktemp("app")
    log = work / "app.log"  # a file, not a pipe: nobody reads a pipe while the tests run, and a full one blocks the app
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no Chromium and chromedriver on this machine (.ci/run installs Debian's chromium and chromium-driver with apt-get)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1080", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def upload_and_run(driver, url: str, path: Path, wait_for: str) -> None:
    """Open the page, upload `path`, press the button and wait until `wait_for` appears in the results."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photos input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys(str(path))
    WebDriverWait(driver, 60).until(lambda d: path.stem in d.find_element(By.ID, "photos").text)  # shown as "stem", ".suffix"
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 180).until(lambda d: wait_for in d.find_element(By.ID, "figures").get_attribute("textContent"))


def table_rows(driver) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#figures tbody tr")
    return [[cell.get_attribute("textContent").strip() for cell in row.find_elements(By.CSS_SELECTOR, "td")] for row in rows]


def test_the_page_is_served_on_loopback(app_url):
    """What `curl http://127.0.0.1:PORT/` gets: the Gradio app's page."""
    with urllib.request.urlopen(app_url, timeout=10) as response:
        assert response.status == 200 and "gradio" in response.read().decode().lower()


def test_a_photo_shows_the_overlay_and_predict_py_figures(app_url, browser, demo_checkpoint, shared_data, tmp_path):
    from selenium.webdriver.common.by import By

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared_data / "photos" / PHOTO, photos / PHOTO)
    expected = predict_folder(demo_checkpoint, photos, tmp_path / "predicted", face_overrides={"align": "ffhq", "skin": "mesh"})[0]
    assert expected["status"] == "ok"

    upload_and_run(browser, app_url, photos / PHOTO, PHOTO)
    from selenium.webdriver.support.ui import WebDriverWait

    # The picture loaded, not only its frame (it arrives after the table).
    loaded = "const i = document.querySelector('#overlays img'); return !!i && i.complete && i.naturalWidth > 0;"
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(loaded))
    (row,) = table_rows(browser)
    columns = ["file", "status", "wrinkle_percent_of_skin", "forehead_percent", "glabella_percent", "periorbital_percent", "cheeks_percent"]
    assert row[: len(columns)] == [str(expected[column]) for column in columns]
    with open(tmp_path / "predicted" / "summary.csv", newline="") as handle:
        written = next(csv.DictReader(handle))
    assert row[2] == written["wrinkle_percent_of_skin"] and row[3] == written["forehead_percent"]  # as summary.csv spells them
    assert "summary.csv" in browser.find_element(By.ID, "downloads").text

    screenshot = tmp_path / "app.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("WRINKLE_DEMO_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["WRINKLE_DEMO_SCREENSHOT"])


def test_a_text_file_gets_a_message_not_a_crash(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    upload_and_run(browser, app_url, notes, notes.name)
    assert browser.find_element(By.ID, "message").text == "notes.txt: not an image file (skipped)"
    assert table_rows(browser)[0][:2] == ["notes.txt", "skipped"]


def test_the_demo_rows_are_predict_py_rows_and_same_named_uploads_stay_apart(demo_checkpoint, shared_data, tmp_path):
    """Without a browser: engine.demo on two uploads of one photo under one name (two folders, as Gradio
    stores uploads) gives predict.py's figures for each and two distinct masks; a taken port is one line."""
    from engine.demo import analyse_photos, render
    from engine.segment_photos import PhotoSegmenter

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(shared_data / "photos" / PHOTO, tmp_path / folder / PHOTO)
    faces = {"align": "ffhq", "skin": "mesh"}
    expected = predict_folder(demo_checkpoint, tmp_path / "a", tmp_path / "predicted", face_overrides=faces)[0]
    segmenter = PhotoSegmenter(demo_checkpoint, face_overrides=faces)
    shown = render(analyse_photos(segmenter, [tmp_path / "a" / PHOTO, tmp_path / "b" / PHOTO]), segmenter.threshold, tmp_path)
    for row in shown.table:
        assert row[:7] == [str(expected[c]) for c in ("file", "status", "wrinkle_percent_of_skin", *(f"{r}_percent" for r in REGIONS))]
    masks = [Path(p).name for p in shown.downloads if p.endswith(".png")]
    assert masks == ["grace_hopper.png", "grace_hopper_2.png"]

    import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match=f"--port {taken.getsockname()[1]}: cannot listen on 127.0.0.1"):
            app.check_port_free("127.0.0.1", taken.getsockname()[1])


def test_without_a_checkpoint_the_page_says_how_to_get_one():
    """The page built with no model (app.py without --checkpoint) explains the two ways to get one."""
    import app

    page = app.build_page(None)
    text = " ".join(str(getattr(block, "value", "")) for block in page.blocks.values())
    assert "bash quickstart.sh" in text and "python -m unet.import_weights" in text
    assert app.parse_args([]).host == "127.0.0.1"  # loopback unless asked otherwise
