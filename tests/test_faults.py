"""Fault injection: what a hostile user or a failing machine does to each path, and what must happen then.

Images: corrupt, truncated, 0-byte and mislabelled files of every format, through the one reader and through
training, tools/test.py, the split and tiled inference. Labels: binary and non-UTF-8 files, overflowing numbers,
boxes outside their images. Runs: config typos, a resume whose state does not fit, two runs on one folder, a run
killed while saving, log records after a resume, an unwritable output folder, concurrent inference workers.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rotated_ddetr.checkpoint import save_checkpoint
from rotated_ddetr.config import ConfigError, load_config
from rotated_ddetr.data.dataset import DotaDataset
from rotated_ddetr.data.dota import DotaFormatError, read_dota_labels, read_task1
from rotated_ddetr.data.split import SplitOptions, split_dataset
from rotated_ddetr.distributed import DistContext
from rotated_ddetr.fileio import FileLock, LockedError
from rotated_ddetr.images import ImageError, probe_image, read_image
from rotated_ddetr.inference.postprocess import Detections
from rotated_ddetr.inference.predictor import predict_scenes
from rotated_ddetr.inference.scenes import open_scene
from rotated_ddetr.model import build_model
from rotated_ddetr.training.logger import read_log
from rotated_ddetr.training.loop import RunStopped, SetupError, train
from tests.training.conftest import tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOL = runpy.run_path(str(ROOT / "tools" / "test.py"))["main"]
INFER_TOOL = runpy.run_path(str(ROOT / "tools" / "infer.py"))["main"]
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FORMATS = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}
PIXELS = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # BGR, as cv2 writes


def _encoded(kind: str) -> bytes:
    ok, data = cv2.imencode(FORMATS[kind], PIXELS)
    assert ok
    return data.tobytes()


def _copy_dataset(src: Path, dst: Path) -> Path:
    """A copy of a DOTA-layout folder, so that a test can damage it."""
    for sub in ("images", "labelTxt"):
        (dst / sub).mkdir(parents=True)
        for path in (src / sub).iterdir():
            (dst / sub / path.name).write_bytes(path.read_bytes())
    return dst


# ---------------------------------------------------------------- images: the one reader


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("fault", ["empty", "garbage", "half", "tail cut"])
def test_bad_images_of_every_format_are_errors_naming_the_file(kind, fault, tmp_path):
    data = _encoded(kind)
    damaged = {"empty": b"", "garbage": bytes(range(256)) * 4, "half": data[: len(data) // 2], "tail cut": data[:-3]}
    path = tmp_path / f"bad{FORMATS[kind]}"
    path.write_bytes(damaged[fault])
    for reader in (probe_image, read_image):
        with pytest.raises(ImageError, match=str(path)):
            reader(path)


@pytest.mark.parametrize("kind", FORMATS)
def test_an_image_under_another_suffix_is_read_by_its_content(kind, tmp_path):
    wrong = ".png" if kind != "png" else ".jpg"
    path = tmp_path / f"mislabelled{wrong}"
    path.write_bytes(_encoded(kind))
    assert probe_image(path).format == kind.upper() and probe_image(path).image_size == (48, 64)
    expected = cv2.imdecode(np.frombuffer(_encoded(kind), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(read_image(path, "bgr"), expected)
    np.testing.assert_array_equal(open_scene(path).read((0, 0, 64, 48)), expected[..., ::-1])  # infer.py's reader


def test_a_truncated_jpeg_is_never_grey_pixels(tmp_path):
    """OpenCV decodes it into a grey-filled image with only a libjpeg message on stderr."""
    data = _encoded("jpeg")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(path)) is not None  # what the bare cv2.imread did
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated JPEG"):
        read_image(path)


# ---------------------------------------------------------------- images: training, testing, splitting


def test_training_refuses_a_bad_image_before_training_or_skips_it_when_asked(tiny_dataset, tmp_path):
    root = _copy_dataset(tiny_dataset, tmp_path / "data")
    bad = sorted((root / "images").iterdir())[1]
    bad.write_bytes(b"")
    cfg = tiny_train_config(root, tmp_path / "run", train={"max_steps": 1})
    with pytest.raises(SetupError, match=f"{bad}: empty file"):
        train(cfg, CPU, progress=False)
    assert not list((tmp_path / "run").glob("checkpoint_*"))
    cfg = tiny_train_config(root, tmp_path / "run", train={"max_steps": 1}, data={"skip_bad_images": True})
    with pytest.warns(UserWarning, match=f"skipped 1 unreadable image.*{bad.name}"):
        result = train(cfg, CPU, progress=False)
    assert result.step == 1 and result.data["images"] == 3 and result.data["skipped_images"] == [str(bad)]


def test_an_image_that_fails_mid_epoch_stops_training_with_its_work_saved(tiny_dataset, tmp_path):
    """A PNG whose header and end are intact but whose pixel data is damaged passes the up-front check; decoding it
    fails when the sample is drawn. The steps done before are saved, and --resume continues once it is fixed."""
    root = _copy_dataset(tiny_dataset, tmp_path / "data")
    cfg = tiny_train_config(root, tmp_path / "run", train={"epochs": 1, "batch_size": 1})
    images = sorted((root / "images").iterdir())
    original = images[2].read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(64)
    images[2].write_bytes(bytes(damaged))
    with pytest.raises(RunStopped, match=f"{images[2]}: corrupt PNG data") as stop:
        train(cfg, CPU, progress=False)
    saved = torch.load(stop.value.checkpoint, weights_only=True)
    assert stop.value.checkpoint == tmp_path / "run" / "checkpoint_last.pth"
    assert saved["epoch"] == 0 and saved["batches_done"] == saved["step"] < 4
    images[2].write_bytes(original)
    result = train(cfg, CPU, resume=stop.value.checkpoint, progress=False)
    assert (result.epoch, result.step) == (1, 4)
    stops = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "stop"]
    assert stops[0]["reason"].startswith(str(images[2]))


def test_test_tool_names_a_bad_image_or_skips_and_counts_it(tiny_dataset, tmp_path, capsys):
    cfg = tiny_train_config(tiny_dataset, tmp_path / "run")
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint, build_model(cfg.model), cfg, cfg.data.classes)
    root = _copy_dataset(tiny_dataset, tmp_path / "data")
    bad = sorted((root / "images").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:-20])
    assert TEST_TOOL([str(checkpoint), "--data", str(root), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"test: error: {bad}: truncated PNG file (its data ends early)\n"
    assert not (tmp_path / "out").exists()
    args = [str(checkpoint), "--data", str(root), "--out", str(tmp_path / "out"), "--quiet", "--skip-bad-images"]
    with pytest.warns(UserWarning, match=f"skipped 1 unreadable image.*{bad.name}"):
        assert TEST_TOOL(args) == 0
    assert "1 unreadable images skipped (not evaluated)" in capsys.readouterr().out
    kept = [p for p in sorted((root / "labelTxt").iterdir()) if p.stem != bad.stem]
    expected = sum(int((read_dota_labels(p).difficult == 0).sum()) for p in kept)  # the bad image's are not counted
    assert sum(json.loads((tmp_path / "out" / "metrics.json").read_text())["num_gt"].values()) == expected


def test_split_names_a_truncated_jpeg_or_skips_and_counts_it(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "src" / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "src" / "images" / f"{name}.jpg"), np.full((300, 300, 3), 90, np.uint8))
    cut = tmp_path / "src" / "images" / "b.jpg"
    cut.write_bytes(cut.read_bytes()[:-400])
    options = SplitOptions(tile_size=256, gap=56)
    with pytest.raises(ImageError, match=r"b\.jpg: truncated JPEG"):
        split_dataset(tmp_path / "src", tmp_path / "dst", options, progress=False)
    assert not list((tmp_path / "dst" / "images").glob("*"))  # checked before the first tile
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        counts = split_dataset(tmp_path / "src", tmp_path / "dst", options, progress=False, skip_bad_images=True)
    assert counts.images == 1 and counts.written == 4 and counts.bad_images == [str(cut)]


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1 2 3 4 5 6 7 8 plane 0\n" + b"9 9 9 9 \xe9t\xe9 plane 0\n", r":2: not UTF-8 text \(byte 0xe9\)"),
        (b"1 2 3 4 5 6 7 8 plane 0\n\x00\x01\x02", r":2: binary data \(a NUL byte\)"),
        (bytes(range(128, 256)), r":1: not UTF-8 text"),
    ],
)
def test_binary_and_non_utf8_label_and_task1_files_are_format_errors(content, message, tmp_path):
    labels, task1 = tmp_path / "P1.txt", tmp_path / "Task1_plane.txt"
    labels.write_bytes(content)
    task1.write_bytes(content)
    for read, path in ((read_dota_labels, labels), (read_task1, [task1])):
        with pytest.raises(DotaFormatError, match=str(path if isinstance(path, Path) else path[0]) + message):
            read(path)
    with pytest.raises(DotaFormatError, match=message):
        read_dota_labels(labels, lenient=True)  # lenient skips bad lines, not a file that is no text


def test_overflowing_coordinates_are_one_error_not_numpy_warnings(tmp_path):
    path = tmp_path / "Task1_plane.txt"
    path.write_text("P1 0.9 1e300 0 10 0 10 10 0 10\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a single numpy warning
        with pytest.raises(
            DotaFormatError, match=r"Task1_plane.txt:1: out-of-range \(beyond \+-2\^53\) number '1e300'"
        ):
            read_task1([path])


def test_objects_outside_their_images_are_dropped_counted_and_warned_about(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    for name in ("in", "out"):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labelTxt" / "in.txt").write_text(
        "10 10 30 10 30 20 10 20 plane 0\n500 10 520 10 520 20 500 20 ship 0\n"
    )
    (tmp_path / "labelTxt" / "out.txt").write_text("300 10 320 10 320 20 300 20 plane 0\n")
    with pytest.warns(UserWarning) as caught:
        dataset = DotaDataset(tmp_path, ("plane", "ship"))
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: 1 label file(s) have all their objects outside their image (dropped): out.txt",
        f"{tmp_path}: 2 of 3 objects lie outside their images and are dropped (wrong images or labels?)",
    ]
    assert dataset.num_objects == 3 and dataset.outside == {tmp_path / "labelTxt" / "in.txt": 1,
                                                            tmp_path / "labelTxt" / "out.txt": 1}  # fmt: skip
    assert [len(labels) for labels in dataset.labels] == [1, 0]
    (tmp_path / "labelTxt" / "in.txt").write_text("500 10 520 10 520 20 500 20 ship 0\n")
    with pytest.raises(ValueError, match="all 2 objects lie outside their images"):
        DotaDataset(tmp_path, ("plane", "ship"))


# ---------------------------------------------------------------- configs and resuming


def test_a_typo_in_a_config_file_is_an_error_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("from rotated_ddetr.config import Config\ncfg = Config()\ncfg.train.epochz = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epochz'; did you mean train.epochs\?"):
        load_config(path)


def test_a_resume_whose_optimiser_state_does_not_fit_says_what_differs(tiny_dataset, tmp_path):
    first = train(tiny_train_config(tiny_dataset, tmp_path / "run", train={"max_steps": 1}), CPU, progress=False)
    cfg = tiny_train_config(tiny_dataset, tmp_path / "run", optim={"lr_backbone": 0.0})
    with pytest.raises(SetupError) as error:
        train(cfg, CPU, resume=first.checkpoint, progress=False)
    message = str(error.value)
    assert "\n" not in message and "does not fit this config" in message
    assert "optim.lr_backbone: 0.001 -> 0.0" in message and "train.max_steps: 1 -> None" in message


# ---------------------------------------------------------------- run folders


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the lock `path` until killed."""
    code = f"from rotated_ddetr.fileio import FileLock; lock = FileLock({str(path)!r}); print('held', flush=True); "
    code += "import time; time.sleep(600)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_run_on_a_busy_folder_refuses_and_a_killed_runs_lock_is_taken_over(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = _hold_lock(run / ".lock")
    cfg = tiny_train_config(tiny_dataset, run, train={"max_steps": 1})
    try:
        with pytest.raises(SetupError, match=rf"in use by another training run \(.*pid {holder.pid} on host"):
            train(cfg, CPU, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # what kill -9 leaves
    assert train(cfg, CPU, progress=False).step == 1  # the stale lock is taken over
    assert not (run / ".lock").exists()


def test_an_earlier_runs_folder_needs_resume_or_overwrite(tiny_dataset, tmp_path):
    cfg = tiny_train_config(tiny_dataset, tmp_path / "run", train={"max_steps": 1})
    first = train(cfg, CPU, progress=False)
    before = first.checkpoint.read_bytes()
    with pytest.raises(SetupError, match=r"holds the files of an earlier run \(checkpoint_last.pth, log.jsonl"):
        train(cfg, CPU, progress=False)
    assert first.checkpoint.read_bytes() == before  # untouched
    assert train(cfg, CPU, progress=False, overwrite=True).step == 1
    assert [r["kind"] for r in read_log(tmp_path / "run" / "log.jsonl")].count("data") == 1  # the old log is gone


def test_a_kill_during_a_save_leaves_nothing_behind_and_the_log_marks_the_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    first = train(tiny_train_config(tiny_dataset, run, train={"max_steps": 2}), CPU, progress=False)
    stale = run / ".checkpoint_last.pth.k1ll3d.tmp"  # what atomic_open leaves when killed mid-save
    stale.write_bytes(b"\0" * 1000)
    with open(run / "log.jsonl", "a") as log:  # steps the killed run logged after its last checkpoint
        log.write(json.dumps({"kind": "train", "step": 3, "loss": 9.0}) + "\n")
    cfg = tiny_train_config(tiny_dataset, run, train={"max_steps": 4})
    train(cfg, CPU, resume=first.checkpoint, progress=False)
    assert not stale.exists()
    records = read_log(run / "log.jsonl")
    resume = next(r for r in records if r["kind"] == "resume")
    assert resume["step"] == 2 and resume["from"] == str(first.checkpoint)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4] and 9.0 not in [r.get("loss") for r in records]


def test_infer_checks_its_output_folder_before_any_inference(tmp_path, capsys, tiny_dataset):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    scene = sorted((tiny_dataset / "images").iterdir())[0]
    cfg = tiny_train_config(tiny_dataset, tmp_path / "run")
    save_checkpoint(tmp_path / "m.pth", build_model(cfg.model), cfg, cfg.data.classes)
    started = time.monotonic()
    assert INFER_TOOL([str(tmp_path / "m.pth"), str(scene), "--out", str(blocker / "out"), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"infer: error: {blocker / 'out'}: not a writable folder")
    assert time.monotonic() - started < 30


def test_concurrent_inference_workers_share_the_scenes(tmp_path):
    """Worker A holds scene s0 (claimed, working on it). This worker does s1 and s2 first, then waits for s0: when A
    ends with s0's result it is skipped here; when A dies without one, it is done here."""
    scenes = []
    for index in range(3):
        scenes.append(tmp_path / f"s{index}.png")
        cv2.imwrite(str(scenes[-1]), np.zeros((40, 40, 3), np.uint8))
    calls = []

    def predict_tiles(tiles):
        calls.append(len(tiles))
        return [Detections(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64)) for _ in tiles]

    for other_finishes in (True, False):
        out = tmp_path / f"out_{other_finishes}"
        (out / "scenes").mkdir(parents=True)
        other = FileLock(out / "scenes" / ".s0.lock")
        with pytest.raises(LockedError):
            FileLock(out / "scenes" / ".s0.lock")

        def finish(out=out, other=other, other_finishes=other_finishes):
            time.sleep(0.5)
            if other_finishes:
                (out / "scenes" / "s0.txt").write_text("")
            other.release()

        threading.Thread(target=finish).start()
        calls.clear()
        report = predict_scenes(scenes, predict_tiles, out, ["plane"], progress=False, tile_size=64, gap=0)
        done = [p.name for p in report.done]
        assert done == (["s1.png", "s2.png"] if other_finishes else ["s1.png", "s2.png", "s0.png"])
        assert [p.name for p in report.skipped] == (["s0.png"] if other_finishes else [])
        assert len(calls) == len(done) and not list((out / "scenes").glob(".*.lock"))
