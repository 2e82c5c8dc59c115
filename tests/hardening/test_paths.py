"""Image paths from annotation files stay inside --images unless the user opts out."""

from __future__ import annotations

import shutil

import pytest

from leansam.data.coco import OutsideRootError, load_coco

from .conftest import assert_error, cli, coco, write


@pytest.fixture
def layout(synth_set, tmp_path):
    """``tmp/images`` (the set's images), ``tmp/outside/secret.png`` (a copy of one) and the annotations."""
    images = tmp_path / "images"
    shutil.copytree(synth_set / "images", images)
    (tmp_path / "outside").mkdir()
    first = coco(synth_set)["images"][0]["file_name"]
    shutil.copy(images / first, tmp_path / "outside" / "secret.png")
    return tmp_path, images


def _with_name(synth_set, tmp_path, name):
    d = coco(synth_set)
    d["images"][0]["file_name"] = name
    return write(tmp_path / "ann.json", d)


def _eval(images, ann, *extra):
    return [
        "eval",
        "--model",
        "tiny_scripted",
        "--images",
        images,
        "--annotations",
        ann,
        "--prompt",
        "box",
        *extra,
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../outside/secret.png", "climbs out of the image folder with '..'"),
        ("sub/../../outside/secret.png", "climbs out of the image folder with '..'"),
        ("ABSOLUTE", "is an absolute path"),
        ("link.png", "is a symlink to"),
        ("linkdir/secret.png", "is a symlink to"),
        ("..\\outside\\secret.png", "climbs out of the image folder"),
    ],
)
def test_file_names_leaving_the_image_folder_are_refused(
    tiny_models, synth_set, layout, capsys, name, message
):
    tmp, images = layout
    (images / "link.png").symlink_to(tmp / "outside" / "secret.png")
    (images / "linkdir").symlink_to(tmp / "outside")
    if name == "ABSOLUTE":
        name = str(tmp / "outside" / "secret.png")
    ann = _with_name(synth_set, tmp, name)
    code, _, err = cli(_eval(images, ann), capsys)
    line = assert_error(code, err, message)
    assert "image id 1: file_name" in line and "--allow-outside-images" in line


def test_opting_out_reads_them(tiny_models, synth_set, layout, capsys):
    tmp, images = layout
    ann = _with_name(synth_set, tmp, "../outside/secret.png")
    code, _, err = cli(_eval(images, ann, "--allow-outside-images", "--limit", "1"), capsys)
    assert code == 0, err


def test_symlinks_inside_the_folder_are_fine(tiny_models, synth_set, layout, capsys):
    tmp, images = layout
    first = coco(synth_set)["images"][0]["file_name"]
    (images / "sub").mkdir()
    (images / "sub" / "alias.jpg").symlink_to(images / first)
    ann = _with_name(synth_set, tmp, "sub/alias.jpg")
    code, _, err = cli(_eval(images, ann, "--limit", "1"), capsys)
    assert code == 0, err


def test_the_library_confines_too(synth_set, layout):
    tmp, images = layout
    ds = load_coco(_with_name(synth_set, tmp, "../outside/secret.png"), images)
    with pytest.raises(OutsideRootError):
        ds.image_path(1)
    ds.allow_outside_root = True
    assert ds.image_path(1).resolve() == (tmp / "outside" / "secret.png").resolve()
