"""The web app in a real headless browser (Debian's chromium driven by selenium) against a real
``leansam serve`` process: what the page draws and exports equals what SamPredictor gives.

Without chromium / chromedriver / selenium these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from tests.serve.conftest import EXAMPLE, decode_rle, reference_masks

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing(what: str) -> None:
    msg = f"browser tests need {what} (apt-get install chromium chromium-driver; pip install selenium)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
    if not CHROMIUM or not CHROMEDRIVER:
        _missing("chromium and chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_settled(driver, condition: str = "true", timeout: float = 60) -> None:
    """Waits until no request is pending and the JS ``condition`` holds; fails on a UI error."""
    from selenium.webdriver.support.ui import WebDriverWait

    js = f"return document.getElementById('mask-canvas').dataset.busy === '0' && ({condition});"
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(js))
    assert driver.execute_script("return window.leansam.error") is None


def open_page(driver, server: str) -> None:
    driver.get(server + "/")
    wait_settled(driver, "document.getElementById('model-select').options.length > 0")


def canvas(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "mask-canvas")


def offset(driver, x: float, y: float) -> tuple[int, int]:
    """Selenium's pointer offset (from the canvas centre) for image pixel (x, y)."""
    size = driver.execute_script(
        "const r = document.getElementById('mask-canvas').getBoundingClientRect();"
        "return [r.width, r.height, document.getElementById('mask-canvas').width];"
    )
    scale = size[0] / size[2]
    return round((x - size[2] / 2) * scale), round(y * scale - size[1] / 2)


def click(driver, x: float, y: float, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(driver).move_to_element_with_offset(canvas(driver), *offset(driver, x, y))
    if shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()


def drag(driver, x0: float, y0: float, x1: float, y1: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    a, b = offset(driver, x0, y0), offset(driver, x1, y1)
    chain = ActionChains(driver).move_to_element_with_offset(canvas(driver), *a).click_and_hold()
    chain.move_by_offset(b[0] - a[0], b[1] - a[1]).release().perform()


def drawn_mask(driver) -> np.ndarray:
    """The pixels the page painted on its mask layer (alpha > 0), H x W bool."""
    js = (
        "const c = document.getElementById('mask-canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const a = new Array(c.width * c.height);"
        "for (let i = 0; i < a.length; i++) a[i] = d[4 * i + 3] > 0 ? '1' : '0';"
        "return [c.height, c.width, a.join('')];"
    )
    h, w, bits = driver.execute_script(js)
    return (np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")).reshape(h, w)


def current(driver) -> dict:
    return driver.execute_script("const s = window.leansam.state; return s.objects[s.current];")


def test_click_mask_equals_predictor(browser, server, tiny, example_image):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    browser.find_element(By.ID, "file-input").send_keys(str(EXAMPLE))
    wait_settled(browser, "document.getElementById('mask-canvas').dataset.imageId !== ''")
    click(browser, 200, 180)
    wait_settled(browser, "window.leansam.state.objects[0].mask !== null")
    obj = current(browser)
    [[x, y, label]] = obj["points"]
    assert abs(x - 200) <= 1 and abs(y - 180) <= 1 and label == 1
    ref, scores = reference_masks(
        tiny, example_image, point_coords=np.array([[x, y]]), point_labels=np.array([1])
    )
    best = ref[int(np.argmax(scores))]
    assert np.array_equal(decode_rle(obj["mask"]), best)
    assert np.array_equal(drawn_mask(browser), best)
    rle = json.loads(canvas(browser).get_attribute("data-mask-rle"))
    assert np.array_equal(decode_rle(rle), best)

    # Shift-click: a background point; two points give one mask.
    click(browser, 330, 90, shift=True)
    wait_settled(browser, "window.leansam.state.objects[0].points.length === 2")
    wait_settled(browser, "window.leansam.lastResponse.results[0].masks.length === 1")
    obj = current(browser)
    pts = np.array([p[:2] for p in obj["points"]])
    assert [p[2] for p in obj["points"]] == [1, 0]
    ref2, _ = reference_masks(
        tiny, example_image, point_coords=pts, point_labels=np.array([1, 0]), multimask_output=False
    )
    assert np.array_equal(drawn_mask(browser), ref2[0])

    # Undo drops the background point: the first mask is back.
    browser.find_element(By.ID, "undo").click()
    wait_settled(browser, "window.leansam.lastResponse.results[0].masks.length === 3")
    assert len(current(browser)["points"]) == 1
    assert np.array_equal(drawn_mask(browser), best)


def test_box_two_objects_and_coco_export(browser, server, tiny, example_image, tmp_path):
    from pycocotools.coco import COCO
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    Select(browser.find_element(By.ID, "folder-select")).select_by_value("sub/copy.jpg")
    wait_settled(browser, "document.getElementById('mask-canvas').dataset.imageId !== ''")
    label = browser.find_element(By.ID, "label-input")
    label.clear()
    label.send_keys("ball")
    label.send_keys("\t")
    drag(browser, 60, 60, 330, 300)
    wait_settled(browser, "window.leansam.state.objects[0].mask !== null")
    box = current(browser)["box"]
    assert np.allclose(box, [60, 60, 330, 300], atol=1.5)
    ref, _ = reference_masks(tiny, example_image, box=np.array(box), multimask_output=False)
    assert np.array_equal(drawn_mask(browser), ref[0])

    browser.find_element(By.ID, "new-object").click()
    label.clear()
    label.send_keys("background")
    label.send_keys("\t")
    click(browser, 30, 330)
    wait_settled(browser, "window.leansam.state.objects.length === 2 && window.leansam.state.objects[1].mask")

    browser.find_element(By.ID, "export").click()
    coco = browser.execute_script("return window.leansam.lastExport")
    objects = browser.execute_script("return window.leansam.state.objects")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(coco))
    ds = COCO(str(path))
    assert ds.imgs[1]["width"] == 400 and ds.imgs[1]["height"] == 360
    assert ds.imgs[1]["file_name"] == "sub/copy.jpg"
    assert sorted(c["name"] for c in ds.cats.values()) == ["background", "ball"]
    anns = ds.loadAnns(ds.getAnnIds(imgIds=[1]))
    assert len(anns) == 2
    for ann, obj in zip(anns, objects):
        m = ds.annToMask(ann).astype(bool)
        assert np.array_equal(m, decode_rle(obj["mask"]))
        assert ann["area"] == int(m.sum()) and ds.cats[ann["category_id"]]["name"] == obj["label"]
    assert np.array_equal(ds.annToMask(anns[0]).astype(bool), ref[0])


@pytest.mark.parametrize("strategy", ["grid", "hierarchical"])
def test_segment_everything_in_page(browser, server, tiny, example_image, strategy):
    """The page's strategy menu picks the sampler; the masks drawn are the generator's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    import leansam

    open_page(browser, server)
    Select(browser.find_element(By.ID, "folder-select")).select_by_value("example.jpg")
    wait_settled(browser, "document.getElementById('mask-canvas').dataset.imageId !== ''")
    opts = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    browser.execute_script("window.leansam.everythingOptions = arguments[0];", opts)
    Select(browser.find_element(By.ID, "strategy-select")).select_by_value(strategy)
    browser.find_element(By.ID, "everything").click()
    wait_settled(browser, "window.leansam.state.objects.length > 1")
    objects = browser.execute_script("return window.leansam.state.objects")
    gen = leansam.AutomaticMaskGenerator(tiny, strategy=strategy, **opts)
    ref = gen.generate(example_image)
    shown = browser.find_element(By.ID, "status").text
    assert f"({gen.last_stats.prompts_decoded} prompts decoded)" in shown
    assert len(objects) == len(ref) > 0
    union = np.zeros(example_image.shape[:2], dtype=bool)
    for obj, r in zip(objects, ref):
        assert np.array_equal(decode_rle(obj["mask"]), r["segmentation"])
        union |= r["segmentation"]
    assert np.array_equal(drawn_mask(browser), union)
