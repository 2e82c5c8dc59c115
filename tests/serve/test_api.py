"""HTTP API of ``leansam serve`` through FastAPI's TestClient: results equal SamPredictor's,
embeddings are cached, and bad requests get the right 4xx while the server keeps serving."""

from __future__ import annotations

import base64
import hashlib
import io
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from leansam.serve.app import ServeConfig, create_app
from tests.serve.conftest import EXAMPLE, decode_rle, reference_masks

POINT = [200.0, 180.0, 1]
BOX = [60.0, 60.0, 330.0, 300.0]


def make_client(tmp_path, **kw) -> TestClient:
    cfg = ServeConfig(cache_dir=tmp_path / "features", **kw)
    return TestClient(create_app(cfg), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(tmp_path_factory, image_dir):
    return make_client(tmp_path_factory.mktemp("api"), images=image_dir, max_upload_bytes=1 << 20)


def png_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def upload(client, data: bytes, name: str = "img.jpg") -> dict:
    r = client.post("/api/images", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def example_id(client) -> str:
    return upload(client, EXAMPLE.read_bytes())["id"]


def predict(client, image_id: str, **body) -> dict:
    r = client.post(f"/api/images/{image_id}/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def click_reference(model, image: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
    """SamPredictor's masks and scores for the foreground click POINT."""
    return reference_masks(
        model,
        image,
        point_coords=np.array([POINT[:2]]),
        point_labels=np.array([1]),
        multimask_output=multimask,
    )


def still_serving(client, image_id: str) -> None:
    assert predict(client, image_id, points=[POINT])["results"][0]["masks"]


# --- results ---------------------------------------------------------------------------------------
def test_upload_id_is_content_hash(client, example_id):
    data = EXAMPLE.read_bytes()
    assert example_id == hashlib.sha256(data).hexdigest()
    info = upload(client, data, "other-name.jpg")
    assert (info["id"], info["width"], info["height"]) == (example_id, 400, 360)


def test_click_equals_predictor(client, example_id, tiny, example_image):
    res = predict(client, example_id, points=[POINT])
    assert res["model"] == "leansam_tiny" and len(res["results"]) == 1
    ref, ref_scores = click_reference(tiny, example_image, multimask=True)
    got = res["results"][0]
    assert len(got["masks"]) == 3 and got["best"] == int(np.argmax(ref_scores))
    for m, r, s in zip(got["masks"], ref, ref_scores):
        assert np.array_equal(decode_rle(m["segmentation"]), r)
        assert m["score"] == pytest.approx(float(s), abs=1e-5)
        assert m["area"] == int(r.sum())
        ys, xs = np.nonzero(r)
        assert m["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_boxes_and_points_equal_predictor(client, example_id, tiny, example_image):
    boxes = [BOX, [150.0, 100.0, 390.0, 350.0]]
    pts = [POINT, [100.0, 300.0, 0]]
    res = predict(client, example_id, points=pts, boxes=boxes)
    assert len(res["results"]) == 2
    for box, got in zip(boxes, res["results"]):
        ref, scores = reference_masks(
            tiny,
            example_image,
            point_coords=np.array([p[:2] for p in pts]),
            point_labels=np.array([1, 0]),
            box=np.array(box),
            multimask_output=False,
        )
        assert len(got["masks"]) == 1
        assert np.array_equal(decode_rle(got["masks"][0]["segmentation"]), ref[0])
        assert got["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-5)


def test_mask_input_and_png(client, example_id, tiny, example_image):
    first = predict(client, example_id, points=[POINT], multimask=False, return_low_res=True, png=True)
    m = first["results"][0]["masks"][0]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(m["png"])))) > 0
    assert np.array_equal(png, decode_rle(m["segmentation"]))
    low = np.frombuffer(base64.b64decode(m["low_res_logits"]), dtype="<f4").reshape(1, *m["low_res_size"])
    second = predict(client, example_id, points=[POINT], mask_input=m["low_res_logits"], multimask=False)
    # predict_torch, not predict(): predict() assumes SAM's 256 x 256 low-res size.
    import leansam

    pred = leansam.SamPredictor(tiny)
    pred.set_image(example_image)
    ref, _, _ = pred.predict_torch(
        torch.tensor([[POINT[:2]]]),
        torch.tensor([[1]]),
        mask_input=torch.from_numpy(low.copy())[None],
        multimask_output=False,
        original_coords=True,
    )
    got = decode_rle(second["results"][0]["masks"][0]["segmentation"])
    assert np.array_equal(got, ref[0, 0].numpy())


@pytest.mark.parametrize(
    "strategy, extra",
    [("grid", {}), ("hierarchical", {}), ("hierarchical", {"high_score_thresh": -2.0})],
)
def test_segment_everything_equals_generator(client, example_id, tiny, example_image, strategy, extra):
    """The endpoint returns the generator's masks and prompt count for the request's strategy
    (hierarchical: the model's confident-logit threshold unless the request sets one)."""
    import leansam

    opts = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, **extra}
    r = client.post(f"/api/images/{example_id}/everything", json={"strategy": strategy, **opts})
    assert r.status_code == 200, r.text
    got = r.json()
    gen = leansam.AutomaticMaskGenerator(tiny, strategy=strategy, **opts)
    ref = gen.generate(example_image)
    assert len(got["masks"]) == len(ref) > 0
    assert got["prompts_decoded"] == gen.last_stats.prompts_decoded
    if strategy == "hierarchical":  # confident sparse masks covered some dense points
        assert gen.last_stats.prompts_skipped > 0
    for g, e in zip(got["masks"], ref):
        assert np.array_equal(decode_rle(g["segmentation"]), e["segmentation"])


def test_segment_everything_uses_the_models_defaults(client, example_id, tiny, example_image):
    """Thresholds the request leaves out are the model's registered ones (SAM's keep ~nothing)."""
    import leansam
    from leansam.everything.options import SAM_DEFAULTS
    from leansam.registry import get_model_info

    r = client.post(f"/api/images/{example_id}/everything", json={})
    assert r.status_code == 200, r.text
    got = r.json()["masks"]
    declared = get_model_info("leansam_tiny").everything.thresholds()
    ref = leansam.AutomaticMaskGenerator(tiny, points_per_side=16, **declared).generate(example_image)
    sam = leansam.AutomaticMaskGenerator(tiny, points_per_side=16, **SAM_DEFAULTS).generate(example_image)
    assert len(got) == len(ref) > len(sam)
    for g, e in zip(got, ref):
        assert np.array_equal(decode_rle(g["segmentation"]), e["segmentation"])
    r = client.post(f"/api/images/{example_id}/everything", json=SAM_DEFAULTS)  # explicit values win
    assert r.status_code == 200, r.text
    assert len(r.json()["masks"]) == len(sam)


def test_models_listing(client):
    r = client.get("/api/models").json()
    assert r["default"] == "leansam_tiny"
    rows = {m["name"]: m for m in r["models"]}
    assert rows["leansam_tiny"]["available"] and "sam_vit_h" in rows


def test_model_switch_per_request(tmp_path, mobile_sam_ckpt, tiny, example_image):
    import leansam

    mobile = leansam.build_model("mobile_sam", checkpoint=mobile_sam_ckpt)
    c = make_client(tmp_path, models={"mobile_sam": mobile})
    iid = upload(c, EXAMPLE.read_bytes())["id"]
    assert c.get("/api/models").json()["models"][0] == {
        "name": "mobile_sam",
        "family": "custom",
        "available": True,
    }
    body = {"points": [POINT], "multimask": False}
    for name, model in (("mobile_sam", mobile), ("leansam_tiny", tiny), (None, tiny)):
        res = predict(c, iid, **body, model=name)
        ref, _ = click_reference(model, example_image, multimask=False)
        assert res["model"] == (name or "leansam_tiny")
        assert np.array_equal(decode_rle(res["results"][0]["masks"][0]["segmentation"]), ref[0])
    assert c.app.state.cache.encoder_calls == 2  # one embedding per model, reused by the default


def test_embeddings_cached_in_memory_and_on_disk(tmp_path):
    c = make_client(tmp_path)
    iid = upload(c, EXAMPLE.read_bytes())["id"]
    first = predict(c, iid, points=[POINT])
    second = predict(c, iid, points=[[100.0, 100.0, 1]])
    assert c.app.state.cache.encoder_calls == 1 and first != second
    files = list((tmp_path / "features").rglob("*.pt"))
    assert [f.name for f in files] == [f"{iid}.pt"]
    # A new server on the same cache folder (a restart) decodes without encoding again.
    c2 = make_client(tmp_path)
    upload(c2, EXAMPLE.read_bytes())
    assert predict(c2, iid, points=[POINT]) == first
    assert c2.app.state.cache.encoder_calls == 0
    # A damaged cache file is recomputed and replaced, with the same result.
    files[0].write_bytes(b"not a torch file")
    c3 = make_client(tmp_path)
    upload(c3, EXAMPLE.read_bytes())
    assert predict(c3, iid, points=[POINT]) == first
    assert c3.app.state.cache.encoder_calls == 1 and files[0].stat().st_size > 1000


def test_concurrent_clients_get_their_own_masks(client, tiny):
    import leansam

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(2)]
    images[1][30:90, 40:120] = (250, 20, 20)
    ids, refs = [], []
    for img in images:
        ids.append(upload(client, png_bytes(img), "x.png")["id"])
        refs.append(
            reference_masks(
                tiny,
                img,
                point_coords=np.array([[80.0, 60.0]]),
                point_labels=np.array([1]),
                multimask_output=False,
            )[0][0]
        )
    assert not np.array_equal(refs[0], refs[1])
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(6):
            r = client.post(
                f"/api/images/{ids[k]}/predict", json={"points": [[80, 60, 1]], "multimask": False}
            )
            if r.status_code != 200 or not np.array_equal(
                decode_rle(r.json()["results"][0]["masks"][0]["segmentation"]), refs[k]
            ):
                errors.append(f"client {k}: {r.status_code}")

    threads = [threading.Thread(target=worker, args=(k % 2,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert leansam.SamPredictor  # the references above came from the public predictor


# --- bad requests ------------------------------------------------------------------------------------
SECRET = b"top secret"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("..%2foutside%2fsecret.txt", 403),
        ("%2e%2e/outside/secret.png", 403),
        ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", 403),
        ("sub/%2e%2e/%2e%2e/outside/secret.png", 403),
        ("%2fetc%2fpasswd", 403),
        ("..%5coutside%5csecret.png", 403),
        ("link_out.png", 403),
        ("linkdir/secret.png", 403),
        ("nope.jpg", 404),
        ("sub%00.jpg", 403),
    ],
)
def test_folder_traversal_refused(client, example_id, name, status):
    r = client.get(f"/api/folder/{name}")
    assert r.status_code == status, r.text
    assert SECRET not in r.content and r.headers["content-type"] == "application/json"
    from urllib.parse import unquote

    r = client.post("/api/folder/open", json={"name": unquote(name)})
    assert r.status_code == status, r.text
    still_serving(client, example_id)


def test_folder_serves_only_inside(client, image_dir):
    assert client.get("/api/folder").json()["images"] == ["example.jpg", "link_in.jpg", "sub/copy.jpg"]
    r = client.get("/api/folder/sub/copy.jpg")
    assert r.status_code == 200 and r.content == EXAMPLE.read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    r = client.post("/api/folder/open", json={"name": "link_in.jpg"})
    assert r.json()["id"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    for name in ["../outside/secret.txt", "/etc/passwd", "sub/../../outside/secret.png", "./example.jpg"]:
        assert client.post("/api/folder/open", json={"name": name}).status_code == 403
    # A name that is still encoded once more is a literal file name, not a path: not found.
    r = client.post("/api/folder/open", json={"name": "%2e%2e%2foutside%2fsecret.png"})
    assert r.status_code == 404


def test_no_folder_is_404(tmp_path):
    c = make_client(tmp_path)
    assert c.get("/api/folder").status_code == 404
    assert c.get("/api/folder/example.jpg").status_code == 404


def test_oversized_upload_refused(client, example_id):
    big = b"\xff" * (2 << 20)
    r = client.post("/api/images", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # Without a Content-Length (chunked), the body is counted as it arrives.
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(40):
            yield b"\xff" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/api/images", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413
    still_serving(client, example_id)


def test_decompression_bomb_refused(client, example_id):
    bomb = png_bytes(np.zeros((9000, 9000), dtype=bool), optimize=True)
    assert len(bomb) < 1 << 20  # small file, 81 M pixels
    r = client.post("/api/images", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 422 and "pixels" in r.json()["detail"]
    still_serving(client, example_id)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not an image at all", "not an image"),
        (EXAMPLE.read_bytes()[:2000], "truncated"),
        (b"", "not an image"),
    ],
)
def test_bad_image_files_refused(client, example_id, data, needle):
    r = client.post("/api/images", files={"file": ("x.jpg", data, "image/jpeg")})
    assert r.status_code == 422 and needle in r.json()["detail"]
    still_serving(client, example_id)


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        (b'{"points": [[200, 180, 1]', "application/json", 422),  # malformed JSON
        (b"[1, 2, 3]", "application/json", 422),
        (b'{"points": [[200, 180, 1]]}', "text/plain", 415),
        (b'{"points": [[200, 180, 1]]}', "", 415),
        (b"points=1", "application/x-www-form-urlencoded", 415),
        (b'{"points": [[200, 180, 3]]}', "application/json", 422),  # label not 0/1
        (b'{"points": [[NaN, 180, 1]]}', "application/json", 422),
        (b'{"points": [[900, 180, 1]]}', "application/json", 422),  # outside the image
        (b'{"boxes": [[50, 50, 40, 90]]}', "application/json", 422),  # empty box
        (b'{"points": []}', "application/json", 422),  # no prompt
        (b'{"points": [[200, 180, 1]], "colour": 1}', "application/json", 422),  # unknown field
        (b'{"points": [[200, 180, 1]], "model": "nope"}', "application/json", 422),
        (b'{"points": [[200, 180, 1]], "model": "sam_vit_h"}', "application/json", 422),  # no weights here
        (b'{"points": [[200, 180, 1]], "mask_input": "!!"}', "application/json", 422),
        (b'{"points": [[200, 180, 1]], "mask_input": "AAAA"}', "application/json", 422),
    ],
)
def test_bad_prompt_requests(client, example_id, content, ctype, status):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post(f"/api/images/{example_id}/predict", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["detail"] and "Traceback" not in r.text
    still_serving(client, example_id)


def test_wrong_content_type_and_unknown_ids(client, example_id):
    r = client.post("/api/images", json={"file": "x"})
    assert r.status_code == 415
    r = client.post("/api/images", content=EXAMPLE.read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 415
    r = client.post("/api/images", files={"other": ("a.jpg", b"x", "image/jpeg")})
    assert r.status_code == 422
    r = client.post("/api/images/" + "0" * 64 + "/predict", json={"points": [POINT]})
    assert r.status_code == 404 and "upload" in r.json()["detail"]
    r = client.post("/api/images/../predict", json={"points": [POINT]})
    assert r.status_code == 404
    r = client.post("/api/images/" + "0" * 64 + "/everything", json={})
    assert r.status_code == 404
    r = client.post(f"/api/images/{example_id}/everything", json={"points_per_side": 1000})
    assert r.status_code == 422
    for bad in ({"strategy": "boxes"}, {"strategy": "hierarchical", "points_per_side": 3}):
        r = client.post(f"/api/images/{example_id}/everything", json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = client.post(
        f"/api/images/{example_id}/everything",
        content=b'{"strategy": "hierarchical", "high_score_thresh": NaN}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert client.get("/docs").status_code == 200
    assert "/api/images/{image_id}/predict" in client.get("/openapi.json").json()["paths"]
    still_serving(client, example_id)


def _server_ms(response) -> float:
    name, dur = response.headers["server-timing"].split(";")
    assert name == "app" and dur.startswith("dur=")
    return float(dur[4:])


def test_server_timing_header(client, example_id):
    import time

    t = time.perf_counter()
    r = client.post(f"/api/images/{example_id}/predict", json={"points": [POINT]})
    elapsed_ms = (time.perf_counter() - t) * 1000
    assert r.status_code == 200
    assert 0 < _server_ms(r) <= elapsed_ms
    # Refused requests are timed too (the middleware sits outside the body limit).
    bad = client.post("/api/images", files={"file": ("big.jpg", b"\xff" * (2 << 20), "image/jpeg")})
    assert bad.status_code == 413 and _server_ms(bad) >= 0
