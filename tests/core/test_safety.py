"""core.safety: atomic writes and the checks that keep users' files."""

from __future__ import annotations

import os
import stat

import pytest

from napari_unet.core.errors import OutputError
from napari_unet.core.safety import (
    TEMP_PREFIX,
    atomic_write,
    check_output,
    check_writable,
    free_path,
    is_our_store,
)


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"old result")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".tif"
        temporary.write_bytes(b"half a ne")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old result"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.tif"]
    with atomic_write(target) as temporary:
        temporary.write_bytes(b"new result")
    assert target.read_bytes() == b"new result"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(TEMP_PREFIX)]


def test_atomic_write_gives_new_files_the_usual_mode_and_keeps_an_old_files(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_write(tmp_path / "new.tif") as temporary:
        temporary.write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "new.tif").stat().st_mode) == 0o666 & ~mask
    (tmp_path / "shared.tif").write_bytes(b"old")
    os.chmod(tmp_path / "shared.tif", 0o640)
    with atomic_write(tmp_path / "shared.tif") as temporary:
        temporary.write_bytes(b"new")
    assert stat.S_IMODE((tmp_path / "shared.tif").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("image.tif", "image.tif"),  # the same file
        ("store.zarr", "store.zarr/0"),  # the input lies inside the output
        ("store.zarr/labels.zarr", "store.zarr"),  # the output lies inside the input
    ],
)
def test_an_output_overlapping_an_input_is_refused(tmp_path, target, source):
    (tmp_path / "store.zarr" / "0").mkdir(parents=True)
    (tmp_path / "image.tif").write_bytes(b"pixels")
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path / target, inputs=[tmp_path / source], overwrite=True)


def test_a_link_to_the_input_is_the_input(tmp_path):
    (tmp_path / "image.tif").write_bytes(b"pixels")
    os.symlink(tmp_path / "image.tif", tmp_path / "link.tif")
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path / "link.tif", inputs=[tmp_path / "image.tif"], overwrite=True)


def test_existing_files_need_overwrite_and_foreign_folders_are_never_replaced(tmp_path):
    (tmp_path / "old.tif").write_bytes(b"result")
    with pytest.raises(OutputError, match=r"already exists; pass --overwrite"):
        check_output(tmp_path / "old.tif")
    check_output(tmp_path / "old.tif", overwrite=True)
    (tmp_path / "mine.zarr").mkdir()
    (tmp_path / "mine.zarr" / "thesis.docx").write_bytes(b"years")
    with pytest.raises(OutputError, match="not a napari-unet result store"):
        check_output(tmp_path / "mine.zarr", overwrite=True)
    assert not is_our_store(tmp_path / "mine.zarr")
    (tmp_path / "ours.zarr").mkdir()
    (tmp_path / "ours.zarr" / ".zattrs").write_text('{"napari_unet": {"complete": true}}')
    assert is_our_store(tmp_path / "ours.zarr")
    check_output(tmp_path / "ours.zarr", overwrite=True)


def test_an_unwritable_place_is_refused_before_any_work(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"a file, not a folder")
    with pytest.raises(OutputError, match=r"cannot write to .*notes\.txt"):
        check_writable(tmp_path / "notes.txt" / "results")
    assert (tmp_path / "notes.txt").read_bytes() == b"a file, not a folder"


def test_free_path_never_names_an_existing_file(tmp_path):
    target = tmp_path / "image.zarr"
    assert free_path(target) == target
    target.mkdir()
    (tmp_path / "image-2.zarr").write_bytes(b"")
    assert free_path(target) == tmp_path / "image-3.zarr"
