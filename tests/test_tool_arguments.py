"""Command-line numbers are checked before any work (issue 12): a bad value gives the tool's error exit status, one
stderr line naming its flag, and no output folder, even when the checkpoint, scenes or data do not exist at all
(tools/infer.py, tools/test.py, tools/split_dota.py, tools/evaluate.py)."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("infer", "test", "split_dota", "evaluate")
MAIN = {tool: runpy.run_path(str(ROOT / "tools" / f"{tool}.py"))["main"] for tool in TOOLS}
EXIT = {"infer": 1, "test": 2, "split_dota": 1, "evaluate": 1}  # each tool's status for its own errors
PREFIX = {tool: f"{tool}: error: " for tool in TOOLS} | {"evaluate": "error: "}  # evaluate's as it was


def _base(tool: str, missing: Path, out: Path) -> list[str]:
    """Arguments naming only files that do not exist, and `out` for every output."""
    return {
        "infer": [str(missing / "none.pth"), str(missing / "scene.png"), "--out", str(out)],
        "test": [str(missing / "none.pth"), "--data", str(missing), "--out", str(out)],
        "split_dota": ["--src", str(missing), "--dst", str(out)],
        "evaluate": ["--dets", str(missing), "--labels", str(missing), "--json", str(out / "result.json")],
    }[tool]


CASES = [
    ("infer", ["--max-dets", "-1"], "--max-dets must be >= 1, got -1"),
    ("infer", ["--max-dets", "0"], "--max-dets must be >= 1, got 0"),
    ("infer", ["--nms-iou", "-0.1"], "--nms-iou must be in [0, 1], got -0.1"),
    ("infer", ["--nms-iou", "1.5"], "--nms-iou must be in [0, 1], got 1.5"),
    ("infer", ["--nms-iou", "nan"], "--nms-iou must be in [0, 1], got nan"),
    ("infer", ["--tile-size", "0"], "--tile-size must be >= 1, got 0"),
    ("infer", ["--gap", "1024"], "--gap must be in [0, --tile-size), got 1024"),
    ("infer", ["--tile-size", "512", "--gap", "-1"], "--gap must be in [0, --tile-size), got -1"),
    ("infer", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("infer", ["--rates", "1.0", "0"], "--rates must be finite numbers > 0, got 0.0"),
    ("infer", ["--rates", "inf", "-1"], "--rates must be finite numbers > 0, got inf -1.0"),
    ("infer", ["--rates", "nan"], "--rates must be finite numbers > 0, got nan"),
    ("infer", ["--score-threshold", "1.5"], "--score-threshold must be in [0, 1], got 1.5"),
    ("infer", ["--score-thr", "-0.5"], "--score-threshold must be in [0, 1], got -0.5"),
    ("test", ["--top-k", "0"], "--top-k must be >= 1, got 0"),
    ("test", ["--score-threshold", "2"], "--score-threshold must be in [0, 1], got 2.0"),
    ("test", ["--nms-iou", "1"], "--nms-iou must be in [0, 1), got 1.0"),
    ("test", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("test", ["--workers", "-1"], "--workers must be >= 0, got -1"),
    ("split_dota", ["--tile-size", "-5"], "--tile-size must be >= 1, got -5"),
    ("split_dota", ["--gap", "1024"], "--gap must be in [0, --tile-size), got 1024"),
    ("split_dota", ["--preset", "ms", "--tile-size", "500"], "--gap must be in [0, --tile-size), got 500"),
    ("split_dota", ["--rates", "0.5", "-1"], "--rates must be finite numbers > 0, got -1.0"),
    ("split_dota", ["--workers", "0"], "--workers must be >= 1, got 0"),
    ("split_dota", ["--thresh", "1.5"], "--thresh must be in [0, 1], got 1.5"),
    ("split_dota", ["--thresh", "nan"], "--thresh must be in [0, 1], got nan"),
    ("evaluate", ["--iou-threshold", "1"], "--iou-threshold must be in [0, 1), got 1.0"),
    ("evaluate", ["--iou-thr", "-0.5"], "--iou-threshold must be in [0, 1), got -0.5"),
]


@pytest.mark.parametrize("tool, args, message", CASES, ids=[f"{t}{''.join(a)}" for t, a, _ in CASES])
def test_a_bad_number_is_one_line_before_any_work(tool, args, message, tmp_path, capsys):
    out = tmp_path / "out"
    code = MAIN[tool]([*_base(tool, tmp_path / "missing", out), *args])
    captured = capsys.readouterr()
    assert code == EXIT[tool]
    assert captured.err == PREFIX[tool] + message + "\n"  # one line, no traceback, the flag named
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_good_numbers_reach_the_missing_files(tool, tmp_path, capsys):
    """The control: with the same missing files and accepted bounds, the error is about the files, not a flag."""
    bounds = {
        "infer": ["--max-dets", "1", "--nms-iou", "0", "--gap", "0", "--score-threshold", "1", "--rates", "0.1"],
        "test": ["--top-k", "1", "--score-threshold", "0", "--nms-iou", "0", "--workers", "0"],
        "split_dota": ["--tile-size", "1", "--gap", "0", "--thresh", "1", "--workers", "1"],
        "evaluate": ["--iou-threshold", "0"],
    }[tool]
    code = MAIN[tool]([*_base(tool, tmp_path / "missing", tmp_path / "out"), *bounds])
    err = capsys.readouterr().err
    assert code == EXIT[tool] and err.startswith(PREFIX[tool]) and " must be " not in err
    assert str(tmp_path / "missing") in err and not (tmp_path / "out").exists()
