"""Registry discovery: every family module under leansam/zoo/ is found, and a broken one raises."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from leansam import registry
from leansam.registry import ModelInfo, RegistryError, family_modules, get_model_info, list_models

ZOO = Path(registry.__file__).parent / "zoo"


def test_every_family_module_is_discovered():
    on_disk = sorted(p.stem for p in ZOO.glob("*.py") if not p.stem.startswith("_"))
    assert family_modules() == on_disk
    families = {get_model_info(n).family for n in list_models()}
    assert families == set(on_disk)


@pytest.mark.parametrize("name", list_models())
def test_entries_hold_functions_not_names(name):
    info = get_model_info(name)
    assert callable(info.builder)
    assert info.checkpoint_filter is None or callable(info.checkpoint_filter)
    assert info.arch_from_state is None or callable(info.arch_from_state)


_GOOD = """
from leansam.registry import ModelInfo
from leansam.zoo.sam import build_sam_vit_b
MODELS = (ModelInfo(name="{name}", family="{family}", builder=build_sam_vit_b, weights=None),)
"""


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """A throw-away family package ``fakezoo`` that the registry reads instead of leansam.zoo."""
    pkg = tmp_path / "fakezoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_helper.py").write_text("X = 1\n")  # helpers (leading underscore) are not families
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "ZOO_PACKAGE", "fakezoo")
    registry._registry.cache_clear()
    yield pkg
    registry._registry.cache_clear()
    for mod in [m for m in sys.modules if m == "fakezoo" or m.startswith("fakezoo.")]:
        del sys.modules[mod]


def _write(pkg: Path, module: str, text: str) -> None:
    (pkg / f"{module}.py").write_text(textwrap.dedent(text))


def test_fake_zoo_loads(fake_zoo):
    _write(fake_zoo, "alpha", _GOOD.format(name="alpha_1", family="alpha"))
    assert list_models() == ["alpha_1"]
    assert isinstance(get_model_info("alpha_1"), ModelInfo)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (_GOOD.format(name="alpha_1", family="alpah"), RegistryError),  # family typo
        ("X = 1\n", RegistryError),  # no MODELS
        ("MODELS = ()\n", RegistryError),  # empty
        ("from leansam.zoo.sammm import build_sam_vit_b\n", ModuleNotFoundError),  # import typo
    ],
)
def test_a_broken_family_raises(fake_zoo, text, error):
    _write(fake_zoo, "alpha", text)
    with pytest.raises(error):
        list_models()


def test_a_name_registered_twice_raises(fake_zoo):
    _write(fake_zoo, "alpha", _GOOD.format(name="same", family="alpha"))
    _write(fake_zoo, "beta", _GOOD.format(name="same", family="beta"))
    with pytest.raises(RegistryError, match="registered twice"):
        list_models()


def test_every_command_module_is_listed_and_a_typo_raises(monkeypatch):
    from leansam import cli

    on_disk = {p.stem for p in (ZOO.parent / "commands").glob("*.py") if p.stem not in ("__init__", "common")}
    assert set(cli.COMMANDS) == on_disk
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "segmnet"))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
