"""The restricted unpickler: pickled nn.Modules become state_dicts without importing their classes."""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap

import pytest
import torch

from leansam import pickle_safe as ps

# A module that exists only while the checkpoint is written (never importable when it is read).
_FOREIGN_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Attention(nn.Module):
        def __init__(self, dim, qk_dim, heads):
            super().__init__()
            self.num_heads = heads
            self.scale = (qk_dim // heads) ** -0.5
            self.q = nn.Linear(dim, qk_dim)
            self.rel_pos_h = nn.Parameter(torch.randn(7, qk_dim // heads))
            self.register_buffer("cache", torch.zeros(3), persistent=False)
            self.register_buffer("counter", torch.tensor(5, dtype=torch.int64))
            self.input_size = (4, 4)
            self.unused = None


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Attention(8, 4, 2), Attention(8, 6, 2)])
            self.neck = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.GELU(), nn.LayerNorm(4))
            self.pos_embed = nn.Parameter(torch.randn(1, 2, 2, 8, dtype=torch.float64))
            self.lowp = nn.Parameter(torch.randn(3, 2).half().t())  # non-contiguous view
            self.depth = 2
            self.global_attn_indexes = [1]


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.image_encoder = Encoder()
            self.head = nn.Linear(4, 1)
            self.register_buffer("pixel_mean", torch.ones(3, 1, 1), False)
            self.image_format = "RGB"
    """
)

_MODULE = "leansam_test_foreign_model"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(path of torch.save(model) with the image encoder in DataParallel, the model's own state_dict)."""
    tmp = tmp_path_factory.mktemp("foreign")
    (tmp / f"{_MODULE}.py").write_text(_FOREIGN_SOURCE)
    sys.path.insert(0, str(tmp))
    try:
        mod = importlib.import_module(_MODULE)
        torch.manual_seed(0)
        model = mod.Model()
        dp = torch.nn.DataParallel(model.image_encoder)
        # As saved on a GPU machine (DataParallel records its devices).
        dp.device_ids, dp.output_device, dp.src_device_obj = [0], 0, torch.device("cuda", 0)
        model.image_encoder = dp
        path = tmp / "model.pth"
        torch.save(model, path)
        torch.save({"model": model, "epoch": 3}, tmp / "wrapped.pth")
        reference = {k: v.clone() for k, v in model.state_dict().items()}
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop(_MODULE, None)
    return path, reference


def test_foreign_module_is_not_importable_when_loading(saved):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(_MODULE)


def test_pickled_module_becomes_its_state_dict_without_importing_it(saved):
    path, reference = saved
    state = ps.load_pickled_module_checkpoint(path)
    assert _MODULE not in sys.modules
    expected = {k.replace("image_encoder.module.", "image_encoder."): v for k, v in reference.items()}
    assert list(state) == list(expected)  # same keys, same order as nn.Module.state_dict()
    for k, v in expected.items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape and state[k].stride() == v.stride()
        assert torch.equal(state[k], v), k
    assert "pixel_mean" not in state and "image_encoder.blocks.0.cache" not in state  # non-persistent
    assert state["image_encoder.blocks.0.counter"].dtype == torch.int64


def test_data_parallel_level_can_be_kept(saved):
    path, reference = saved
    state = ps.load_pickled_module_checkpoint(path, unwrap_data_parallel=False)
    assert list(state) == list(reference)


def test_wrapped_module_is_found_under_model_key(saved):
    path, reference = saved
    state = ps.load_pickled_module_checkpoint(path.with_name("wrapped.pth"))
    assert len(state) == len(reference)


def test_stub_tree_records_module_attributes(saved):
    path, _ = saved
    obj = ps.safe_torch_load(path)
    assert isinstance(obj, ps.StubObject) and obj.stub_class_path == f"{_MODULE}.Model"
    assert obj.image_format == "RGB"
    dp = obj.image_encoder
    assert dp.stub_class_path == "torch.nn.parallel.data_parallel.DataParallel"
    assert dp.src_device_obj == torch.device("cuda", 0)
    attn = dp.module.blocks.children()["1"]
    assert attn.num_heads == 2 and attn.scale == pytest.approx(3**-0.5) and attn.input_size == (4, 4)
    assert dp.module.global_attn_indexes == [1]
    # The original classes were never imported: every object is an inert stub.
    assert type(attn).__module__ == ps.__name__


def test_plain_state_dict_pickle_is_accepted(tmp_path):
    sd = {"a": torch.arange(4.0), "b": torch.ones(2, 2, dtype=torch.bfloat16)}
    torch.save(sd, tmp_path / "sd.pth")
    out = ps.load_pickled_module_checkpoint(tmp_path / "sd.pth")
    assert all(torch.equal(out[k], sd[k]) for k in sd)


class _RunsShell:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_pickle_calling_os_system_is_refused(tmp_path):
    bomb = _RunsShell()
    bomb.target = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(1)}, "x": bomb}, tmp_path / "evil.pth")
    with pytest.raises(ps.UnsafePickleError, match=r"os\.system|posix\.system"):
        ps.load_pickled_module_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ps.UnsafePickleError, match="system"):
        ps.loads(pickle.dumps(bomb, protocol=2))
    assert not (tmp_path / "pwned").exists()


def test_pickle_calling_builtins_is_refused():
    with pytest.raises(ps.UnsafePickleError, match=r"builtin_*s?\.eval"):
        ps.loads(pickle.dumps(_CallsEval(), protocol=2))
    for proto in (0, 2, 4):
        # GLOBAL builtins.getattr (the usual way to reach anything else).
        with pytest.raises(ps.UnsafePickleError, match="getattr"):
            ps.loads(pickle.dumps(getattr, protocol=proto))


def test_calling_an_unknown_class_or_function_is_refused():
    # A global of an unknown module is only a stub; calling it (REDUCE) is refused, not run.
    payload = b"\x80\x02csome_package.tools\ndo_things\nq\x00X\x03\x00\x00\x00argq\x01\x85q\x02Rq\x03."
    with pytest.raises(ps.UnsafePickleError, match=r"some_package\.tools\.do_things\('arg'\)"):
        ps.loads(payload)
    assert "some_package" not in sys.modules


def test_torch_internals_outside_the_allow_list_are_refused():
    payload = b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00C\x01xq\x01\x85q\x02Rq\x03."
    with pytest.raises(ps.UnsafePickleError, match="_load_from_bytes"):
        ps.loads(payload)


def test_non_module_pickle_is_reported(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(ps.PickledCheckpointError, match=r"not an nn\.Module or a state_dict"):
        ps.load_pickled_module_checkpoint(tmp_path / "meta.pth")
