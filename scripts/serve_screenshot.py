"""Regenerates docs/img/serve.png: `leansam serve` in headless chromium with two objects prompted.

Usage (needs chromium, chromium-driver and the test extra): python scripts/serve_screenshot.py
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "serve.png"


def wait_settled(driver: webdriver.Chrome, condition: str) -> None:
    js = f"return document.getElementById('mask-canvas').dataset.busy === '0' && ({condition});"
    WebDriverWait(driver, 120).until(lambda d: d.execute_script(js))


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LEANSAM_HOME": tempfile.mkdtemp(), "PYTHONPATH": str(ROOT)}
    images = ROOT / "leansam" / "assets"
    cmd = [sys.executable, "-m", "leansam.cli", "serve", "--port", str(port), "--images", str(images)]
    server = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        driver.get(url)
        wait_settled(driver, "document.getElementById('folder-select').options.length > 1")
        driver.find_element(By.ID, "folder-select").send_keys("example.jpg")
        wait_settled(driver, "document.getElementById('mask-canvas').dataset.imageId !== ''")
        canvas = driver.find_element(By.ID, "mask-canvas")
        label = driver.find_element(By.ID, "label-input")
        label.clear()
        label.send_keys("ball\t")
        ActionChains(driver).move_to_element_with_offset(canvas, -140, -120).click_and_hold().move_by_offset(
            270, 240
        ).release().perform()
        wait_settled(driver, "window.leansam.state.objects[0].mask !== null")
        driver.find_element(By.ID, "new-object").click()
        label.clear()
        label.send_keys("backdrop\t")
        ActionChains(driver).move_to_element_with_offset(canvas, 150, -150).click().perform()
        wait_settled(driver, "window.leansam.state.objects[1].mask !== null")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        png = driver.get_screenshot_as_png()
        Image.open(io.BytesIO(png)).crop((0, 0, 1170, 430)).save(OUT, optimize=True)
        driver.quit()
        print(f"wrote {OUT}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
