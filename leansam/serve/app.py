"""The FastAPI application: the HTTP API under ``/api`` and the single-page UI at ``/``.

All compute endpoints are plain ``def`` so FastAPI runs them in its thread pool; the model is
shared, each request builds its own :class:`leansam.SamPredictor` on cached features.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

import leansam
from leansam.data.coco import encode_mask

from ..checkpoints import CheckpointError
from ..io import InputError
from ..registry import UnknownModelError
from .engine import FeatureCache, ModelPool
from .images import Forbidden, ImageFolder, ImageStore, NotFound
from .limits import BodyLimit, require_json, require_multipart
from .schemas import (
    EverythingRequest,
    EverythingResponse,
    FolderListing,
    FolderOpen,
    ImageInfo,
    MaskRecord,
    ModelListing,
    ModelRow,
    PromptRequest,
    PromptResponse,
    PromptResult,
)
from .timing import ServerTiming


@dataclass
class ServeConfig:
    """Server settings. ``cache_dir`` None: ``$LEANSAM_HOME/serve/features``. ``models``: extra
    models served under their names (see :class:`~leansam.serve.engine.ModelPool`)."""

    model: str | None = None
    images: str | Path | None = None
    device: str = "cpu"
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 1 << 26
    cache_dir: Path | None = None
    memory_cache_bytes: int = 1 << 30
    models: dict[str, leansam.Sam] | None = None


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def mask_record(mask: np.ndarray, score: float, png: bool, low_res: np.ndarray | None = None) -> MaskRecord:
    """The API record of one H x W boolean mask: COCO RLE, area, XYWH bbox (+ PNG, low-res logits)."""
    ys, xs = np.nonzero(mask)
    bbox = [0.0, 0.0, 0.0, 0.0]
    if len(xs):
        bbox = [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ]
    return MaskRecord(
        segmentation=encode_mask(mask),
        score=float(score),
        area=int(mask.sum()),
        bbox=bbox,
        png=_png_b64(mask) if png else None,
        low_res_logits=(
            base64.b64encode(low_res.astype("<f4").tobytes()).decode("ascii") if low_res is not None else None
        ),
        low_res_size=list(low_res.shape) if low_res is not None else None,
    )


def _decode_mask_input(text: str, size: tuple[int, int]) -> torch.Tensor:
    """base64 little-endian float32 logits -> 1 x 1 x h x w, ``size`` = the model's low-res (h, w)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise InputError("mask_input is not valid base64") from None
    h, w = size
    if len(raw) != h * w * 4:
        raise InputError(
            f"mask_input must hold {h} x {w} float32 values for this model ({h * w * 4} bytes), "
            f"got {len(raw)} bytes"
        )
    arr = np.frombuffer(raw, dtype="<f4").reshape(1, 1, h, w)
    if not np.isfinite(arr).all():
        raise InputError("mask_input holds non-finite values")
    return torch.from_numpy(arr.copy())


def _check_inside(req: PromptRequest, h: int, w: int) -> None:
    for x, y, _ in req.points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {w} x {h} image")
    for x0, y0, x1, y1 in req.boxes:
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {w} x {h} image")


def predict(pred: leansam.SamPredictor, req: PromptRequest) -> list[PromptResult]:
    """Runs ``req``'s prompts on a predictor with features set; one result per box (or one)."""
    if not req.points and not req.boxes and req.mask_input is None:
        raise InputError("no prompt given: send points, boxes and/or mask_input")
    dev = pred.device
    n = max(1, len(req.boxes))
    coords = labels = boxes = mask_in = None
    if req.points:
        pts = torch.tensor([p[:2] for p in req.points], dtype=torch.float32)
        coords = pts[None].expand(n, -1, -1).to(dev)
        labels = torch.tensor([p[2] for p in req.points], dtype=torch.int64)[None].expand(n, -1).to(dev)
    if req.boxes:
        boxes = torch.tensor(req.boxes, dtype=torch.float32).to(dev)
    if req.mask_input is not None:
        mask_in = _decode_mask_input(req.mask_input, pred.low_res_size()).expand(n, -1, -1, -1).to(dev)
    multimask = req.multimask
    if multimask is None:
        multimask = len(req.points) == 1 and not req.boxes and req.mask_input is None
    with torch.inference_mode():
        masks, scores, low = pred.predict_torch(
            coords, labels, boxes, mask_in, multimask_output=multimask, original_coords=True
        )
    masks, scores, low = masks.cpu().numpy(), scores.float().cpu().numpy(), low.float().cpu().numpy()
    results = []
    for i in range(masks.shape[0]):
        recs = [
            mask_record(masks[i, j], scores[i, j], req.png, low[i, j] if req.return_low_res else None)
            for j in range(masks.shape[1])
        ]
        results.append(PromptResult(masks=recs, best=int(np.argmax(scores[i]))))
    return results


def _install_error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def handle(_request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc).strip() or type(exc).__name__}, status_code=status)

        return handle

    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Without the offending input: it may hold values JSON cannot carry (NaN) or be huge.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(InputError, handler(422))
    app.add_exception_handler(UnknownModelError, handler(422))
    app.add_exception_handler(CheckpointError, handler(422))
    app.add_exception_handler(NotFound, handler(404))
    app.add_exception_handler(Forbidden, handler(403))


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app for ``config`` (run it with uvicorn). Models load on first use."""
    config = config or ServeConfig()
    pool = ModelPool(config.model, config.device, config.models)
    cache = FeatureCache(config.cache_dir, config.memory_cache_bytes)
    store = ImageStore(config.max_pixels, config.memory_cache_bytes)
    folder = ImageFolder(config.images) if config.images is not None else None

    app = FastAPI(
        title="leansam serve",
        version=leansam.__version__,
        description="Interactive segmentation with every efficient SAM variant. Coordinates are "
        "pixels of the original image (x right, y down). Masks come back as compressed COCO RLE.",
    )
    app.state.pool, app.state.cache, app.state.store = pool, cache, store
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(ServerTiming)  # outermost: the time includes the body limit check

    static = resources.files("leansam") / "serve" / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/api/models", response_model=ModelListing)
    def models() -> ModelListing:
        """Registered models, which of them can load here, the default and those loaded."""
        return _model_listing(pool)

    _add_image_routes(app, store, folder)
    _add_prompt_routes(app, pool, cache, store)
    return app


def _model_listing(pool: ModelPool) -> ModelListing:
    from ..checkpoints import is_cached
    from ..registry import get_model_info, list_models

    loaded = pool.loaded()
    rows = [ModelRow(name=n, family="custom", available=True) for n in pool.custom]
    for name in list_models():
        if name in pool.custom:
            continue
        info = get_model_info(name)
        w = info.weights
        ok = w is not None and (w.url.startswith("package://") or is_cached(info))
        rows.append(ModelRow(name=name, family=info.family, available=ok))
    return ModelListing(default=pool.default, loaded=loaded, models=rows)


def _add_image_routes(app: FastAPI, store: ImageStore, folder: ImageFolder | None) -> None:
    def _folder() -> ImageFolder:
        if folder is None:
            raise HTTPException(404, "the server was started without --images")
        return folder

    @app.post("/api/images", response_model=ImageInfo, dependencies=[Depends(require_multipart)])
    def upload(file: UploadFile = File(..., description="the image file")) -> ImageInfo:  # noqa: B008
        """Uploads an image (multipart field ``file``); returns its id (SHA-256 of the bytes)."""
        image_id, image = store.add(file.file.read())
        return ImageInfo(id=image_id, width=image.shape[1], height=image.shape[0])

    @app.get("/api/folder", response_model=FolderListing)
    def folder_list() -> FolderListing:
        """The image files of ``--images`` (404 when the server has no folder)."""
        return FolderListing(images=_folder().list())

    @app.get("/api/folder/{name:path}")
    def folder_file(name: str) -> Response:
        """The bytes of one image file of ``--images``."""
        data, media_type = _folder().read(name)
        return Response(data, media_type=media_type)

    @app.post("/api/folder/open", response_model=ImageInfo, dependencies=[Depends(require_json)])
    def folder_open(body: FolderOpen) -> ImageInfo:
        """Loads an image of ``--images`` as if uploaded; returns its id."""
        data, _ = _folder().read(body.name)
        image_id, image = store.add(data)
        return ImageInfo(id=image_id, width=image.shape[1], height=image.shape[0])


def _add_prompt_routes(app: FastAPI, pool: ModelPool, cache: FeatureCache, store: ImageStore) -> None:
    @app.post(
        "/api/images/{image_id}/predict", response_model=PromptResponse, dependencies=[Depends(require_json)]
    )
    def prompt(image_id: str, req: PromptRequest) -> PromptResponse:
        """Masks for points / boxes / a low-res mask on an uploaded image."""
        image = store.get(image_id)
        h, w = image.shape[:2]
        _check_inside(req, h, w)
        lm = pool.get(req.model)
        pred = cache.predictor(lm, image_id, image)
        return PromptResponse(image_id=image_id, model=lm.name, width=w, height=h, results=predict(pred, req))

    @app.post(
        "/api/images/{image_id}/everything",
        response_model=EverythingResponse,
        dependencies=[Depends(require_json)],
    )
    def everything(image_id: str, req: EverythingRequest) -> EverythingResponse:
        """Segment everything: masks for point prompts (a grid, or TinySAM's hierarchical rounds),
        filtered and de-duplicated."""
        image = store.get(image_id)
        lm = pool.get(req.model)
        gen = leansam.AutomaticMaskGenerator(lm.model, strategy=req.strategy, **req.generator_options())
        with torch.inference_mode():
            recs = gen.generate(image)
        masks = [mask_record(r["segmentation"], r["predicted_iou"], req.png) for r in recs]
        h, w = image.shape[:2]
        return EverythingResponse(
            image_id=image_id,
            model=lm.name,
            width=w,
            height=h,
            masks=masks,
            prompts_decoded=gen.last_stats.prompts_decoded,
        )
