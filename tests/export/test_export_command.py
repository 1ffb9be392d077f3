"""`rotated-ddetr export`: safetensors release weights that predict as the checkpoint does, and bad options or files
refused in one line before any work (its ONNX and pt2 files are checked in test_export.py)."""

import numpy as np
import pytest
import torch

import rotated_ddetr
from rotated_ddetr.cli.main import main
from tests.export.conftest import EXPORT_SIZE

SIZE = [str(side) for side in EXPORT_SIZE]


def test_safetensors_from_the_command_predict_as_the_checkpoint(tiny_checkpoint, synthetic_tiles, tmp_path, capsys):
    out = tmp_path / "release" / "tiny.safetensors"
    assert main(["export", str(tiny_checkpoint), "--format", "safetensors", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} and {out.with_suffix('.json')} (safetensors, ")
    [from_weights] = rotated_ddetr.load(out).predict(synthetic_tiles[0])
    [from_checkpoint] = rotated_ddetr.load(tiny_checkpoint).predict(synthetic_tiles[0])
    assert len(from_weights.scores) == len(from_checkpoint.scores) > 0
    np.testing.assert_array_equal(from_weights.rboxes, from_checkpoint.rboxes)
    np.testing.assert_array_equal(from_weights.labels, from_checkpoint.labels)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--format", "onnx", "--opset", "17", "--image-size", *SIZE],
            "--opset must be >= 18 (the exporter's own opset; ONNX's version converter cannot lower this graph), "
            "got 17",
        ),
        (
            ["--format", "onnx", "--image-size", "250", "256"],
            "--image-size must be two multiples of 64 (the model's largest stride), got (250, 256)",
        ),
        (["--format", "pt2", "--opset", "20"], "--opset applies to --format onnx only, not pt2"),
        (
            ["--format", "safetensors", "--image-size", *SIZE],
            "--image-size applies to onnx and pt2; safetensors holds weights only",
        ),
        (["--format", "safetensors", "--out-name-is-wrong"], None),
    ],
    ids=["opset", "image-size", "opset-pt2", "image-size-safetensors", "unknown-flag"],
)
def test_bad_options_are_one_line_and_write_nothing(args, message, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    argv = ["export", str(tiny_checkpoint), "--out", str(out), *args]
    if message is None:  # argparse's own error: exit status 2, usage + one line
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and "unrecognized arguments: --out-name-is-wrong" in capsys.readouterr().err
    else:
        assert main(argv) == 1
        assert capsys.readouterr().err == f"export: error: {message}\n"
    assert not list(tmp_path.iterdir())


def test_a_missing_or_foreign_checkpoint_is_one_line(tmp_path, capsys):
    missing = tmp_path / "none.pth"
    assert main(["export", str(missing), "--format", "pt2", "--out", str(tmp_path / "x.pt2")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("export: error: ") and str(missing) in err and err.count("\n") == 1
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    assert main(["export", str(foreign), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"export: error: {foreign}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pth"]
