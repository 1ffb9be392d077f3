"""The DOTA server's submission zip: one Task1 file per class of the version at the zip's root, empty ones for classes
without detections, the same text as write_task1, written atomically."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from rotated_ddetr.data import DOTA_V1_0_CLASSES, DOTA_V2_0_CLASSES, Task1Detections, read_task1, write_task1
from rotated_ddetr.data.dota import task1_text
from rotated_ddetr.data.submission import write_task1_zip


def _dets() -> dict[str, Task1Detections]:
    return {
        "plane": Task1Detections(["P0001", "P0002"], [0.9, 0.25], [[1, 2, 3, 4, 5, 6, 7, 8], [0.5] * 8]),
        "ship": Task1Detections(["P0001"], [1e-6], [[10, 20, 30, 40, 50, 60, 70, 80.25]]),
    }


def test_zip_holds_every_class_at_its_root(tmp_path: Path):
    path = tmp_path / "out" / "submission.zip"
    names = write_task1_zip(path, _dets(), DOTA_V1_0_CLASSES)
    assert names == [f"Task1_{c}.txt" for c in DOTA_V1_0_CLASSES] and len(names) == 15
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == names  # no folder: the server fails on one
        infos = {info.filename: info for info in archive.infolist()}
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos.values())
        assert all((info.external_attr >> 16) & 0o777 == 0o644 for info in infos.values())
        assert (
            archive.read("Task1_plane.txt").decode()
            == "P0001 0.9 1 2 3 4 5 6 7 8\nP0002 0.25 0.5 0.5 0.5 0.5 0.5 0.5 0.5 0.5\n"
        )
        assert archive.read("Task1_ship.txt").decode() == task1_text(_dets()["ship"])
        empty = [n for n in names if n not in ("Task1_plane.txt", "Task1_ship.txt")]
        assert len(empty) == 13 and all(archive.read(n) == b"" for n in empty)
        archive.extractall(tmp_path / "unpacked")
    back = read_task1(tmp_path / "unpacked")
    write_task1(tmp_path / "folder", _dets())
    for name, dets in read_task1(tmp_path / "folder").items():  # same detections as the folder writer's files
        assert back[name].image_names == dets.image_names
        np.testing.assert_array_equal(back[name].scores, dets.scores)
        np.testing.assert_array_equal(back[name].polygons, dets.polygons)
    assert not list(path.parent.glob(".*.tmp"))  # the atomic writer left no temporary


def test_classes_outside_the_version_are_left_out_with_a_warning(tmp_path: Path):
    dets = {**_dets(), "airport": Task1Detections(["P1"], [0.5], np.zeros((1, 8))), "helipad": _dets()["ship"]}
    with pytest.warns(UserWarning, match="2 detections of classes outside the submission's left out: airport, helipad"):
        names = write_task1_zip(tmp_path / "s.zip", dets, DOTA_V1_0_CLASSES)
    assert "Task1_airport.txt" not in names
    assert len(write_task1_zip(tmp_path / "s2.zip", dets, DOTA_V2_0_CLASSES)) == 18


def test_a_failed_write_leaves_the_old_zip(tmp_path: Path):
    path = tmp_path / "s.zip"
    write_task1_zip(path, _dets(), DOTA_V1_0_CLASSES)
    before = path.read_bytes()
    broken = {"plane": Task1Detections(["P1"], [0.5], np.zeros((1, 8)))}
    broken["plane"].image_names = ["P1", "P2"]  # inconsistent after construction: formatting fails midway
    with pytest.raises(ValueError):
        write_task1_zip(path, broken, DOTA_V1_0_CLASSES)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
