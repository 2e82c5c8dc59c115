"""Checkpoint reading, verification, download and strict loading."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import save_file

import leansam
from leansam.checkpoints import (
    CheckpointError,
    download,
    load_checkpoint,
    read_state_dict,
    resolve_checkpoint,
)
from leansam.registry import UnknownModelError, get_model_info
from tests import parity as P

NAME = "sam_vit_b"


@pytest.fixture(scope="module")
def state():
    return P.stand_in_state_dict(NAME)[0]


@pytest.fixture(scope="module")
def info():
    return get_model_info(NAME)


@pytest.fixture(scope="module")
def bare_file(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("ck") / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    return path


def test_bare_wrapped_and_safetensors_read_the_same(tmp_path, state, info, bare_file):
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "trainer.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    ref = read_state_dict(bare_file, info)
    for name in ("wrapped.pth", "trainer.pth", "w.safetensors"):
        got = read_state_dict(tmp_path / name, info)
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_safetensors_checkpoint_builds_a_working_model(tmp_path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "sam.safetensors")
    model = leansam.build_model(NAME, checkpoint=tmp_path / "sam.safetensors")
    assert torch.equal(
        model.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"]
    )


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_or_empty_file(tmp_path, bare_file, info, cut):
    data = bare_file.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path, info)
    msg = str(e.value)
    assert str(path) in msg and NAME in msg


def test_random_bytes(tmp_path, info):
    path = tmp_path / "junk.pth"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(CheckpointError, match="not a valid PyTorch or safetensors file"):
        read_state_dict(path, info)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_without_opt_in(tmp_path, info, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        read_state_dict(path, info)
    assert "this must never run" not in capsys.readouterr().out


def test_not_a_state_dict(tmp_path, info):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "meta.pth", info)


def test_missing_key_is_named(state, info):
    partial = dict(state)
    del partial["image_encoder.neck.0.weight"]
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(info.build(), info, partial, "x.pth")
    assert "missing keys (1): image_encoder.neck.0.weight" in str(e.value)


def test_checkpoint_of_another_model_names_the_right_one(state):
    other = get_model_info("sam_vit_l")
    with torch.device("meta"):
        model = other.build()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model, other, state, "sam_vit_b_01ec64.pth")
    msg = str(e.value)
    assert "does not fit model 'sam_vit_l'" in msg
    assert "wrong shapes" in msg and "missing keys (168)" in msg  # ViT-L has 12 more blocks
    assert "use --model sam_vit_b" in msg
    missing = msg.split("missing keys (168): ")[1].split("\n")[0]
    listed = [k.strip() for k in missing.split(",") if "more" not in k]
    assert len(listed) == 20 and listed == sorted(listed)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean sam_vit_b"):
        leansam.build_model("sam_vit_bb")


def _file_info(info, path, sha):
    w = dataclasses.replace(info.weights, url=path.resolve().as_uri(), sha256=sha)
    return dataclasses.replace(info, weights=w)


def test_download_verifies_sha_and_caches(tmp_path, monkeypatch, info, bare_file):
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    sha = hashlib.sha256(bare_file.read_bytes()).hexdigest()
    local = _file_info(info, bare_file, sha)
    path, verified = resolve_checkpoint(local, progress=False)
    assert verified and path == tmp_path / "home" / "checkpoints" / info.weights.file_name
    assert path.read_bytes() == bare_file.read_bytes()
    # A second call uses the cache (the source may disappear).
    gone = _file_info(info, tmp_path / "nowhere.pth", sha)
    assert resolve_checkpoint(gone, progress=False) == (path, True)


def test_download_with_wrong_sha_leaves_nothing(tmp_path, monkeypatch, info, bare_file):
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    bad = _file_info(info, bare_file, "0" * 64)
    with pytest.raises(CheckpointError, match="discarded"):
        download(bad, progress=False)
    folder = tmp_path / "home" / "checkpoints"
    assert list(folder.iterdir()) == []


def test_no_network_names_url_and_destination(tmp_path, monkeypatch, info):
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    offline = dataclasses.replace(
        info, weights=dataclasses.replace(info.weights, url="http://127.0.0.1:9/sam_vit_b_01ec64.pth")
    )
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint(offline, progress=False)
    msg = str(e.value)
    assert "http://127.0.0.1:9/sam_vit_b_01ec64.pth" in msg
    assert str(tmp_path / "home" / "checkpoints" / "sam_vit_b_01ec64.pth") in msg
    assert not list((tmp_path / "home" / "checkpoints").glob("*.pth"))


def test_corrupt_cached_file_is_reported(tmp_path, monkeypatch, info):
    monkeypatch.setenv("LEANSAM_HOME", str(tmp_path / "home"))
    cached = tmp_path / "home" / "checkpoints" / info.weights.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the official file")
    with pytest.raises(CheckpointError, match="corrupt or not the official file"):
        resolve_checkpoint(info, progress=False)


def test_zipped_checkpoint_like_efficientsam_vits(tmp_path, state, info, bare_file):
    import zipfile

    with zipfile.ZipFile(tmp_path / "efficient_sam_vits.pt.zip", "w") as z:
        z.write(bare_file, "weights/efficient_sam_vits.pt")
    got = read_state_dict(tmp_path / "efficient_sam_vits.pt.zip", info)
    assert got.keys() == state.keys() and torch.equal(
        got["image_encoder.pos_embed"], state["image_encoder.pos_embed"]
    )
