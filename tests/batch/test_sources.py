"""Image sources: folders, globs and list files, in a fixed order, lazily, each image once."""

from __future__ import annotations

import pytest

from leansam.batch.sources import is_dataset_input, iter_images, source_kind
from leansam.io import InputError


def _touch(root, *names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folder_is_walked_recursively_in_sorted_order_images_only(tmp_path):
    _touch(tmp_path, "b.png", "a.JPG", "z/c.jpg", "m/d.jpeg", "notes.txt", ".hidden/e.jpg", "m/.f.png")
    keys = [i.key for i in iter_images(str(tmp_path))]
    assert keys == ["a.JPG", "b.png", "m/d.jpeg", "z/c.jpg"]


def test_glob_and_list_file(tmp_path):
    _touch(tmp_path, "imgs/a.jpg", "imgs/b.png", "imgs/deep/c.jpg")
    pattern = str(tmp_path / "imgs" / "**" / "*.jpg")
    assert source_kind(pattern) == "glob"
    assert [i.path for i in iter_images(pattern)] == [
        str(tmp_path / "imgs" / "a.jpg"),
        str(tmp_path / "imgs" / "deep" / "c.jpg"),
    ]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\nimgs/b.png\n\n{tmp_path / 'imgs' / 'a.jpg'}\nimgs/b.png\n")
    items = list(iter_images(str(lst)))
    assert [i.key for i in items] == ["imgs/b.png", str(tmp_path / "imgs" / "a.jpg")]  # duplicate dropped
    assert items[0].path == str(tmp_path / "imgs" / "b.png")


def test_list_file_naming_a_missing_file_is_an_input_error(tmp_path):
    _touch(tmp_path, "a.jpg")
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg\nmissing.jpg\n")
    with pytest.raises(InputError, match=r"line 2 names missing\.jpg"):
        list(iter_images(str(lst)))


def test_single_images_and_missing_paths_are_not_datasets(tmp_path):
    _touch(tmp_path, "a.jpg")
    assert not is_dataset_input(str(tmp_path / "a.jpg"))
    assert not is_dataset_input(str(tmp_path / "nope.jpg"))  # the single-image path reports it
    assert is_dataset_input(str(tmp_path))
