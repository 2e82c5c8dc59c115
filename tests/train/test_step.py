"""The training step's two options for accelerators: batches prepared by worker processes
(``data_workers``) and one decoder call per prompt kind for the whole batch (``batched_decode``)."""

from __future__ import annotations

import dataclasses

import torch

import leansam
from leansam.train.data import StepLoader, image_cells, open_source
from leansam.train.prompts import background_region
from leansam.train.runner import step_seed
from leansam.train.train import (
    TrainConfig,
    _batched_groups,
    _Group,
    _pick_prompts,
    _PreparedSteps,
    decode_all,
    load_batch,
    make_step,
    train,
)

SMALL = dict(model="leansam_nano", data="synth:12:3", batch_size=2, prompts_per_image=4, loss_res=64)


def test_step_loader_serves_what_load_batch_prepares() -> None:
    cfg = TrainConfig(steps=6, **SMALL)
    model = leansam.build_model("leansam_nano")
    source = open_source(cfg.data)
    loader = StepLoader(_PreparedSteps(source, model, cfg, 0, 1), cfg.steps, workers=2)
    for step in (0, 1, 2, 4):  # 4: the workers start over from a step out of order
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0))
        want = load_batch(source, model, cfg, step, 0, 1, gen)
        got = loader.get(step)
        assert [p.key for p in got] == [p.key for p in want]
        for g, w in zip(got, want):
            assert torch.equal(g.x, w.x) and torch.equal(g.masks.float(), w.masks) and g.frame == w.frame
        # the step draws the flips from its generator itself and goes on from the same state
        gen2 = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0))
        torch.rand(len(got), generator=gen2)
        assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=gen2))


def test_batched_decode_gives_each_prompt_its_own_images_masks() -> None:
    model = leansam.build_model("leansam_nano").eval()
    torch.manual_seed(0)
    x = torch.randn(3, 3, 256, 256)
    box = torch.tensor([[10.0, 20.0, 120.0, 200.0], [50.0, 60.0, 90.0, 100.0]])
    clicks = torch.tensor([[[30.0, 40.0]], [[200.0, 100.0]], [[128.0, 128.0]]])
    labels = torch.ones(3, 1, dtype=torch.long)
    gt = torch.zeros(5, 64, 64)
    groups = [  # boxes on images 2 and 0, clicks on image 1
        _Group(2, gt[:1], box[:1], None, None),
        _Group(0, gt[1:2], box[1:], None, None),
        _Group(1, gt[2:], None, clicks, labels),
    ]
    with torch.no_grad():
        feats = model.encode_image(x)
        joined = _batched_groups(groups, feats)
        assert [len(g.gt) for _, g in joined] == [2, 3]
        for (f, g), per_image in zip(joined, (groups[:2], groups[2:])):
            low = decode_all(model, f, g.coords, g.labels, g.boxes, None)[0]
            want = torch.cat(
                [
                    decode_all(model, feats.select(p.image), p.coords, p.labels, p.boxes, None)[0]
                    for p in per_image
                ]
            )
            # measured: at most 1.5e-5 on logits up to 41 (fp32 rounding of the batched convolutions)
            assert torch.allclose(low, want, atol=1e-4), float((low - want).abs().max())


def test_batched_decode_on_one_image_is_the_per_image_step() -> None:
    losses = []
    for batched in (False, True):
        cfg = TrainConfig(steps=1, correction_rounds=0, batched_decode=batched, **{**SMALL, "batch_size": 1})
        model = leansam.build_model("leansam_nano")
        torch.manual_seed(0)
        loss, _ = make_step(model, open_source(cfg.data), cfg, 0, 1, torch.device("cpu"))(0)
        losses.append(float(loss.detach()))
    assert abs(losses[0] - losses[1]) < 1e-5, losses


def test_worker_prepared_batches_train_the_same_weights(tmp_path) -> None:
    weights = []
    for workers in (0, 2):
        cfg = TrainConfig(
            out=str(tmp_path / f"w{workers}"),
            steps=3,
            threads=1,
            progress=False,
            data_workers=workers,
            **SMALL,
        )
        train(dataclasses.replace(cfg, batched_decode=True))
        weights.append(torch.load(tmp_path / f"w{workers}" / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_background_clicks_land_on_the_background_and_target_all_of_it() -> None:
    model = leansam.build_model("leansam_nano")
    frame = model.transform.prompt_frame
    groups = {}
    for n_bg in (0, 3):
        cfg = TrainConfig(steps=1, background_clicks=n_bg, **SMALL)
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, 0, 0))
        batch = load_batch(open_source(cfg.data), model, cfg, 0, 0, 1, gen)
        groups[n_bg] = list(_pick_prompts(batch, cfg, gen, frame, torch.device("cpu")))
    side = SMALL["loss_res"]
    # the first image's instance prompts are the ones drawn without background clicks (later
    # images' come after the background draws)
    (box0, click0), (box3, click3) = groups[0][0], groups[3][0]
    assert torch.equal(box0.boxes, box3.boxes) and torch.equal(click0.coords, click3.coords[:-3])
    assert torch.equal(click0.gt, click3.gt[:-3])
    for p, (_, click3) in zip(batch, groups[3]):
        size = image_cells(p.frame, side, frame)
        bg = background_region(p.masks, size)[0]
        assert size[0] < side or size[1] < side  # the image is padded: padding is not background
        assert all(torch.equal(g, bg) for g in click3.gt[-3:])
        cells = (click3.coords[-3:, 0] * side / frame).long()
        assert (click3.labels[-3:] == 1).all()
        assert all(bg[int(y), int(x)] == 1 for x, y in cells.tolist())
