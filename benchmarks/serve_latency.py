"""``leansam serve`` latency over real HTTP: a click on a cached image, the first prompt on a new
image, and 8 concurrent clients.

    python -m benchmarks.serve_latency [--models leansam_tiny,mobile_sam] [--runs 30]
        [--clients 8] [--threads 2] [--json docs/results/serve_latency.json]

The server is a separate process (``uvicorn`` on a free loopback port, torch ``--threads``
threads), so the client's work never shares its interpreter. Every response carries
``Server-Timing: app;dur=MS`` (leansam.serve.timing), the time from the request's arrival to the
response headers; the client also records the round trip. Models alternate request by request
(A B A B ...). Per model:

* ``click_cached``: one foreground click (single mask, RLE only) on an image whose embedding is
  already cached, ``runs`` times at seeded random points;
* ``first_prompt``: upload of a new 1024 x 768 JPEG, then its first click (which encodes it),
  ``first_runs`` times with a fresh image each time (disk cache in a temporary folder);
* ``concurrent``: ``clients`` threads, each with its own cached image, each sending
  ``runs`` clicks as fast as answers come back; latency per request and requests per second.

Weights: the bundled ones for ``leansam_tiny``; seeded random initialisation for the others
(official checkpoints cannot be downloaded here; speed does not depend on weight values).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.weights import record_bundled
from leansam.bench.timing import machine_fingerprint
from leansam.io import write_json

RESULT = Path("docs/results/serve_latency.json")
MODELS = ("leansam_tiny", "mobile_sam")
COMMAND = "python -m benchmarks.serve_latency --models {models} --runs {runs} --clients {clients} --threads {threads}"
TARGET_MS = 100.0  # issue #18: click -> mask with a cached embedding, server side, mobile_sam
SIZE = (768, 1024)  # H, W of the generated test images


def _serve(port: int, models: list[str], threads: int, cache_dir: str) -> None:
    """Server process: the named models (bundled or random-init weights) behind uvicorn."""
    import torch
    import uvicorn

    import leansam
    from leansam.serve.app import ServeConfig, create_app

    torch.set_num_threads(threads)
    built = {}
    for name in models:
        torch.manual_seed(0)
        built[name] = leansam.build_model(name, pretrained=name == "leansam_tiny").eval()
    cfg = ServeConfig(model=models[0], models=built, cache_dir=Path(cache_dir))
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image(seed: int) -> bytes:
    """A seeded 1024 x 768 JPEG of smooth colour blobs (distinct bytes per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(SIZE[::-1], Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class _Client:
    def __init__(self, base: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=base, timeout=300.0)

    def upload(self, data: bytes) -> tuple[str, float, float]:
        t = time.perf_counter()
        r = self.http.post("/api/images", files={"file": ("img.jpg", data, "image/jpeg")})
        client = time.perf_counter() - t
        r.raise_for_status()
        return r.json()["id"], _server_s(r), client

    def click(self, image_id: str, model: str, xy: tuple[float, float]) -> tuple[float, float]:
        body = {"model": model, "points": [[xy[0], xy[1], 1]], "multimask": False}
        t = time.perf_counter()
        r = self.http.post(f"/api/images/{image_id}/predict", json=body)
        client = time.perf_counter() - t
        r.raise_for_status()
        return _server_s(r), client


def _server_s(response: Any) -> float:
    return float(response.headers["server-timing"].split("dur=")[1]) / 1000


def _stats(values: list[float]) -> dict[str, Any]:
    s = sorted(values)
    return {
        "median_s": statistics.median(s),
        "p90_s": s[min(len(s) - 1, round(0.9 * (len(s) - 1)))],
        "best_s": s[0],
        "runs_s": values,
    }


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(base + "/api/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server at {base} did not answer within {timeout:.0f} s")


def _sequential(c: _Client, models: tuple[str, ...], runs: int, first_runs: int) -> dict[str, Any]:
    """Cached clicks and first prompts, the models alternating call by call."""
    rng = np.random.default_rng(0)
    h, w = SIZE
    warm = {m: c.upload(_image(1000 + k))[0] for k, m in enumerate(models)}
    for m, image_id in warm.items():
        for _ in range(3):  # encodes, then warms the decoder path
            c.click(image_id, m, (w / 2, h / 2))
    rows: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in ("click_server", "click_client", "first_server", "first_client", "upload_server")}
        for m in models
    }
    for _ in range(runs):
        xy = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        for m in models:
            s, cl = c.click(warm[m], m, xy)
            rows[m]["click_server"].append(s)
            rows[m]["click_client"].append(cl)
    seed = 2000
    for _ in range(first_runs):
        for m in models:
            seed += 1
            image_id, up_s, _ = c.upload(_image(seed))
            s, cl = c.click(image_id, m, (w / 2, h / 2))
            rows[m]["upload_server"].append(up_s)
            rows[m]["first_server"].append(s)
            rows[m]["first_client"].append(cl)
    return {m: {k: _stats(v) for k, v in r.items()} for m, r in rows.items()}


def _concurrent(base: str, model: str, clients: int, runs: int, seed0: int) -> dict[str, Any]:
    """``clients`` threads, each clicking ``runs`` times on its own cached image."""
    h, w = SIZE
    ids = []
    setup = _Client(base)
    for k in range(clients):
        image_id = setup.upload(_image(seed0 + k))[0]
        setup.click(image_id, model, (w / 2, h / 2))
        ids.append(image_id)
    server: list[float] = []
    client: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        c = _Client(base)
        rng = np.random.default_rng(k)
        start.wait()
        for _ in range(runs):
            s, cl = c.click(ids[k], model, (float(rng.uniform(0, w)), float(rng.uniform(0, h))))
            with lock:
                server.append(s)
                client.append(cl)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(client),
        "wall_s": wall,
        "requests_per_s": len(client) / wall,
        "server": _stats(server),
        "client": _stats(client),
    }


def run(
    models: tuple[str, ...] = MODELS,
    runs: int = 30,
    first_runs: int = 5,
    clients: int = 8,
    threads: int = 2,
    out: Path | None = RESULT,
    log: Any = None,
) -> dict[str, Any]:
    """Starts the server, measures (see the module docstring), writes the JSON result to ``out``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    models = tuple(models)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="leansam-servebench-") as tmp:
        cmd = [sys.executable, "-m", "benchmarks.serve_latency", "--serve", str(port)]
        cmd += ["--models", ",".join(models), "--threads", str(threads), "--cache-dir", tmp]
        proc = subprocess.Popen(cmd)
        try:
            _wait_ready(base, proc)
            log(f"server up on {base}")
            seq = _sequential(_Client(base), models, runs, first_runs)
            for m in models:
                log(
                    f"{m}: cached click {seq[m]['click_server']['median_s'] * 1000:.1f} ms server, "
                    f"first prompt {seq[m]['first_server']['median_s'] * 1000:.0f} ms server"
                )
            conc = {}
            for k, m in enumerate(models):
                conc[m] = _concurrent(base, m, clients, runs, seed0=5000 + 100 * k)
                log(f"{m}: {clients} clients, {conc[m]['requests_per_s']:.1f} requests/s")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    res = {
        "command": COMMAND.format(models=",".join(models), runs=runs, clients=clients, threads=threads),
        "machine": machine_fingerprint().to_dict(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "image_size": list(SIZE),
        "runs": runs,
        "first_runs": first_runs,
        "threads": threads,
        "weights": {m: "bundled" if m == "leansam_tiny" else "random init (seed 0)" for m in models},
        "sequential": seq,
        "concurrent": conc,
    }
    if out is not None:
        write_json(out, record_bundled(res))
    return res


def targets(res: dict) -> list[dict]:
    """Issue #18's latency target as measured in ``res``."""
    seq = res["sequential"].get("mobile_sam")
    if seq is None:
        return []
    ms = seq["click_server"]["median_s"] * 1000
    return [
        {
            "target": f"serve: mobile_sam click -> mask, cached embedding, server side < {TARGET_MS:.0f} ms",
            "measured": f"{ms:.1f} ms (median of {res['runs']})",
            "met": ms < TARGET_MS,
        }
    ]


def _ms(stats: dict) -> str:
    return f"{stats['median_s'] * 1000:.1f} / {stats['p90_s'] * 1000:.1f}"


def render(res: dict) -> str:
    m = res["machine"]
    load = res["load_average"]
    h, w = res["image_size"]
    lines = [
        "## Web app latency (`leansam serve`)",
        "",
        f"`{res['command']}` on {m.get('cpu', '?')} ({m.get('cores', '?')} cores), torch threads "
        f"{res['threads']} in the server process; load average {load['before'][0]:.2f} before, "
        f"{load['after'][0]:.2f} after. Images {w} x {h} JPEG. Server time is the `Server-Timing` "
        "header (request arrival to response headers); client time is the HTTP round trip on "
        "loopback. Milliseconds, median / p90.",
        "",
        "| model | weights | cached click, server | cached click, client | first prompt, server | "
        "first prompt, client | upload, server |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in res["sequential"].items():
        lines.append(
            f"| {name} | {res['weights'][name]} | {_ms(s['click_server'])} | {_ms(s['click_client'])} | "
            f"{_ms(s['first_server'])} | {_ms(s['first_client'])} | {_ms(s['upload_server'])} |"
        )
    lines += [
        "",
        f"Concurrent clients, each clicking {res['runs']} times on its own cached image:",
        "",
        "| model | clients | requests/s | server ms (median / p90) | client ms (median / p90) |",
        "|---|---|---|---|---|",
    ]
    for name, c in res["concurrent"].items():
        lines.append(
            f"| {name} | {c['clients']} | {c['requests_per_s']:.1f} | {_ms(c['server'])} | {_ms(c['client'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_latency", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--first-runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=RESULT)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    if args.serve is not None:
        _serve(args.serve, list(models), args.threads, args.cache_dir)
        return 0
    run(models, args.runs, args.first_runs, args.clients, args.threads, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
