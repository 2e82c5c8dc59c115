"""``leansam data synth``: the synthetic COCO set from the command line."""

from __future__ import annotations

import json

from leansam.cli import main
from leansam.data.coco import load_coco
from leansam.data.synth import generate


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_synth_writes_the_same_set_as_the_library(tmp_path, capsys):
    out = tmp_path / "set"
    code, _, err = run(["data", "synth", "--n", "2", "--out", out, "--seed", "3"], capsys)
    assert code == 0, err
    assert "wrote 2 images" in err
    ds = load_coco(out / "annotations.json")
    assert len(ds) == 2 and all(ds.image_path(i).exists() for i in ds.image_ids())
    ref = generate(2, tmp_path / "ref", seed=3)
    assert json.loads((out / "annotations.json").read_text()) == json.loads(ref.read_text())


def test_synth_refuses_a_foreign_annotations_file_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    (out / "annotations.json").write_text("the user's")
    code, _, err = run(["data", "synth", "--n", "1", "--out", out], capsys)
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "annotations.json").read_text() == "the user's"
    code, _, err = run(["data", "synth", "--n", "1", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "annotations.json").read_text() != "the user's" and (out / "keep.txt").read_text() == "x"


def test_synth_bad_arguments(tmp_path, capsys):
    for args, pattern in (
        (["data", "synth", "--n", "-1", "--out", tmp_path / "a"], "non-negative integer"),
        (["data", "synth", "--out", tmp_path / "a"], "--n"),
        (["data"], "missing data command"),
    ):
        code, _, err = run(args, capsys)
        assert code == 2 and err.startswith("error: ") and pattern in err, err
