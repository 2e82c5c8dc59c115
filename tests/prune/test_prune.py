"""Structural pruning: SlimSAM shapes, exactness of the channel bookkeeping, self-describing models."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import leansam
from leansam.cli import main
from leansam.models.tiny_fpn import TinyFPNConfig, TinyFPNEncoder
from leansam.models.vit import ViTConfig, ViTImageEncoder
from leansam.prune import PruneConfig, prune_model, read_arch, save_pruned
from leansam.prune.conv import prune_tiny_fpn
from leansam.prune.importance import scorer
from leansam.prune.vit import ViTWidths, prune_vit, target_widths
from tests import parity as P
from tests.compress.helpers import one_thread  # noqa: F401  (autouse fixture)

TINY_VIT = ViTConfig(
    img_size=64, embed_dim=48, depth=2, num_heads=4, mlp_dim=96, window_size=2, global_attn_indexes=(1,)
)


@pytest.fixture(scope="module")
def sam_vit_b_ckpt(tmp_path_factory):
    return P.write_stand_in_checkpoint("sam_vit_b", tmp_path_factory.mktemp("ck") / "sam_vit_b.pth")


@pytest.mark.parametrize(("ratio", "official"), [(0.5, "slimsam_50"), (0.77, "slimsam_77")])
def test_sam_vit_b_pruned_to_slimsam_shapes(ratio, official, sam_vit_b_ckpt, tmp_path):
    """leansam prune of SAM ViT-B at SlimSAM's two settings gives the official checkpoint's keys and
    shapes, key for key, and the official registry entry loads the pruned weights strictly."""
    out = tmp_path / "pruned"
    rc = main(
        [
            "prune",
            "--model",
            f"sam_vit_b:{sam_vit_b_ckpt}",
            "--ratio",
            str(ratio),
            "--importance",
            "magnitude",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    state = leansam.prune.arch.load_state(out)
    want = {k: tuple(shape) for k, shape, _ in P.manifest(official)["keys"]}
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    model, _ = leansam.checkpoints.load_model(official, out / "model.safetensors")
    assert model.image_encoder.cfg.embed_dim == want["image_encoder.pos_embed"][-1]


def _dead_bottleneck_vit(seed: int = 0) -> ViTImageEncoder:
    """A random tiny ViT in which half of the q/k head dims, v dims and MLP units are dead: zero
    weights in and out (the output does not depend on them)."""
    torch.manual_seed(seed)
    enc = ViTImageEncoder(TINY_VIT).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.3)
        h, d = TINY_VIT.num_heads, TINY_VIT.embed_dim // TINY_VIT.num_heads
        for blk in enc.blocks:
            dead = torch.arange(1, d, 2)  # odd dims of every head
            for part in range(3):  # q, k, v rows
                rows = (part * h * d + torch.arange(h)[:, None] * d + dead).reshape(-1)
                blk.attn.qkv.weight[rows] = 0
                blk.attn.qkv.bias[rows] = 0
            blk.attn.proj.weight[:, (torch.arange(h)[:, None] * d + dead).reshape(-1)] = 0
            blk.attn.rel_pos_h[:, dead] = 0
            blk.attn.rel_pos_w[:, dead] = 0
            units = torch.arange(0, TINY_VIT.mlp_dim, 2)
            blk.mlp.lin1.weight[units] = 0
            blk.mlp.lin1.bias[units] = 0
            blk.mlp.lin2.weight[:, units] = 0
    return enc


def test_vit_bottleneck_pruning_of_dead_dims_is_exact():
    """Removing dead q/k/v head dims and MLP units leaves the encoder's output unchanged: the channel
    bookkeeping (q, k, v rows, rel-pos columns, proj / lin2 columns) and the attention-scale
    compensation are exact."""
    enc = _dead_bottleneck_vit()
    x = torch.randn(2, 3, 64, 64)
    widths = target_widths(TINY_VIT, TINY_VIT, 0.5, bottleneck=True, embedding=False)
    assert widths == ViTWidths(embed=48, qk_head=6, v_head=6, mlp=48)
    pruned = prune_vit(enc, widths, scorer("magnitude")).eval()
    assert pruned.blocks[0].attn.head_dim == 6 and pruned.blocks[0].mlp.lin1.out_features == 48
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), enc(x), rtol=1e-4, atol=1e-5)


def test_vit_embedding_pruning_keeps_the_largest_channels():
    """Embedding pruning keeps the channels with the most weight and slices every coupled tensor."""
    enc = _dead_bottleneck_vit(1)
    with torch.no_grad():
        enc.patch_embed.proj.weight[:24] *= 10  # channels 0..23 dominate the magnitude scores
    widths = target_widths(TINY_VIT, TINY_VIT, 0.5, bottleneck=False, embedding=True)
    pruned = prune_vit(enc, widths, scorer("magnitude"))
    assert pruned.cfg.embed_dim == 24 and pruned.cfg.block_dims is not None
    torch.testing.assert_close(pruned.patch_embed.proj.weight, enc.patch_embed.proj.weight[:24])
    torch.testing.assert_close(pruned.pos_embed, enc.pos_embed[..., :24])
    torch.testing.assert_close(pruned.neck[0].weight, enc.neck[0].weight[:, :24])
    assert pruned(torch.randn(1, 3, 64, 64)).shape == (1, 256, 4, 4)


def test_tiny_fpn_inner_width_pruning_of_dead_channels_is_exact():
    """Dead inner channels of the residual blocks (conv1-BN output zero) are removed without
    changing the encoder's outputs."""
    torch.manual_seed(0)
    cfg = TinyFPNConfig()
    enc = TinyFPNEncoder(cfg).eval()
    with torch.no_grad():
        for stage in enc.stages:
            for blk in stage:
                bn = blk.conv1[1]
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2)
                n = bn.num_features
                bn.weight[n // 2 :] = 0
                bn.bias[n // 2 :] = 0
    pruned = prune_tiny_fpn(enc, 0.5, True, False, scorer("magnitude"), cfg).eval()
    assert pruned.config.mids == tuple((w // 2,) * d for w, d in zip(cfg.widths, cfg.depths))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        (e0, h0), (e1, h1) = enc(x), pruned(x)
    torch.testing.assert_close(e1, e0, rtol=1e-4, atol=1e-4)
    for a, b in zip(h1, h0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_pruned(tmp_path_factory):
    """leansam_nano pruned by half (taylor on synthetic scenes with masks, alternate slimming)."""
    teacher = leansam.build_model("leansam_nano")
    cfg = PruneConfig(ratio=0.5, importance="taylor", calib="synth:4:7", num_calib=4)
    model, report = prune_model(teacher, "leansam_nano", cfg)
    out = tmp_path_factory.mktemp("pruned") / "tiny_p50"
    save_pruned(model, out, report)
    return teacher, model, report, out


def test_pruned_model_round_trips_and_predicts_identically(tiny_pruned):
    _teacher, model, report, out = tiny_pruned
    assert report["encoder_params_after"] < 0.5 * report["encoder_params_before"]
    arch = read_arch(out)
    assert arch["base"] == "leansam_nano" and arch["encoder"]["kind"] == "tiny_fpn"
    loaded = leansam.build_model(str(out))
    assert loaded.image_encoder.config == model.image_encoder.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3)), dtype=np.uint8)
    masks = []
    for m in (model, loaded):
        pred = leansam.SamPredictor(m)
        pred.set_image(image)
        masks.append(pred.predict(box=np.array([40, 30, 200, 150]))[0])
    assert np.array_equal(masks[0], masks[1])
    assert json.loads((out / "prune.json").read_text())["config"]["importance"] == "taylor"


def test_pruned_model_on_the_command_line(tiny_pruned, tmp_path, capsys):
    """--model DIR and --checkpoint DIR work for the other commands; a wrong base is refused."""
    _, _, _, out = tiny_pruned
    from tests.compress.helpers import make_images

    images = make_images(tmp_path / "imgs", n=1)
    img = next(images.glob("*.jpg"))
    assert (
        main(
            ["segment", str(img), "--model", str(out), "--box", "10,10,120,120", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert (
        main(
            [
                "segment",
                str(img),
                "--checkpoint",
                str(out),
                "--box",
                "10,10,120,120",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "segment",
                str(img),
                "--model",
                "sam_vit_b",
                "--checkpoint",
                str(out),
                "--box",
                "10,10,120,120",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert "pruned 'leansam_nano' model and does not fit 'sam_vit_b'" in err[-1]
    assert not (tmp_path / "c").exists()
    rc = main(
        [
            "compare",
            "--reference",
            "leansam_nano",
            "--candidate",
            str(out),
            "--images",
            str(images),
            "--no-everything",
            "--prompts-per-image",
            "2",
        ]
    )
    assert rc == 0


def test_pruned_model_quantizes_and_round_trips(tiny_pruned, tmp_path):
    from leansam.compress import TinySamPTQConfig, load_quantized, quantize_, save_quantized
    from tests.compress.helpers import load_images, make_images

    _, _, _, out = tiny_pruned
    model = leansam.build_model(str(out))
    calib = load_images(make_images(tmp_path / "calib", n=2))
    quantize_(model, TinySamPTQConfig(num_calib=2), calib)
    save_quantized(model, tmp_path / "q")
    again = load_quantized(tmp_path / "q")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(x).embed, model.encode_image(x).embed)


def test_pruned_model_exports_to_onnx(tiny_pruned, tmp_path):
    pytest.importorskip("onnxruntime")
    from leansam.export import export_onnx, load_onnx_model

    _, model, _, out = tiny_pruned
    exp = export_onnx(leansam.build_model(str(out)), tmp_path / "onnx")
    onnx_model = load_onnx_model(exp.directory)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        want = model.encode_image(x).embed
    torch.testing.assert_close(onnx_model.encode_image(x).embed, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", ["encoder", "full"])
def test_recovery_distillation_reduces_the_embedding_error(mode, tmp_path):
    """Each stage's recovery (leansam distill: embedding MSE, or with ``full`` also the decoder's
    tokens and masks) brings the pruned model closer to its teacher; ``teacher_cache`` keeps the
    teacher's embeddings on disk for later runs."""
    teacher = leansam.build_model("leansam_nano")
    cfg = PruneConfig(
        ratio=0.5,
        importance="disturbed-taylor",
        calib="synth:2:3",
        num_calib=2,
        recovery_steps=6,
        recovery_data="synth:8:5",
        batch_size=2,
        lr=1e-3,
        recovery_mode=mode,
        teacher_cache=str(tmp_path / "cache"),
    )
    _, report = prune_model(teacher, "leansam_nano", cfg)
    assert [s["pruned"] for s in report["stages"]] == [["bottleneck"], ["embedding"]]
    for s in report["stages"]:
        assert s["embed_mse_recovered"] < s["embed_mse"], s
    assert list((tmp_path / "cache").glob("*/*.pt"))


def _run_cli(args, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["prune", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err, out


@pytest.mark.parametrize("ratio", ["0", "1", "-0.2", "1.5", "nan"])
def test_bad_ratio(ratio, tmp_path, capsys):
    rc, err, out = _run_cli(["--model", "leansam_nano", "--ratio", ratio], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "ratio" in err[0]
    assert not out.exists()


def test_unprunable_encoder_is_refused(tmp_path, capsys):
    """MobileSAM's TinyViT encoder: refused before any weights are read (no download is attempted)."""
    rc, err, out = _run_cli(["--model", "mobile_sam", "--ratio", "0.5"], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and "TinyViT" in err[0] and "cannot be pruned" in err[0]
    assert not out.exists()


def test_taylor_needs_masks(tmp_path, capsys):
    from tests.compress.helpers import make_images

    images = make_images(tmp_path / "imgs", n=1)
    rc, err, out = _run_cli(
        ["--model", "leansam_nano", "--ratio", "0.5", "--importance", "taylor", "--calib", str(images)],
        tmp_path,
        capsys,
    )
    assert rc == 2 and len(err) == 1 and "needs ground-truth masks" in err[0]
    assert not out.exists()


def test_prune_config_fields_are_checked():
    with pytest.raises(ValueError, match="importance"):
        PruneConfig(ratio=0.5, importance="random")
    assert dataclasses.asdict(PruneConfig(ratio=0.25))["ratio"] == 0.25


def test_heavily_pruned_tiny_fpn_recovers():
    """75% pruning leaves a 6-channel stem; recovery trains it (this torch's CPU backward crashed on
    channels-last convolutions of such widths, so training runs contiguous)."""
    teacher = leansam.build_model("leansam_nano")
    cfg = PruneConfig(
        ratio=0.75,
        importance="magnitude",
        recovery_steps=3,
        recovery_data="synth:8:5",
        batch_size=2,
        lr=1e-3,
    )
    model, report = prune_model(teacher, "leansam_nano", cfg)
    assert model.image_encoder.config.stem_width == 6
    assert all(s["embed_mse_recovered"] < s["embed_mse"] for s in report["stages"]), report["stages"]
