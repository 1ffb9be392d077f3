"""tools/gpu_check.sh: its usage and argument errors (the dry run itself runs in tools/run_tests.sh)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), *args], capture_output=True, text=True)


def test_help_prints_the_usage():
    result = _run("--help")
    assert result.returncode == 0
    assert "bash tools/gpu_check.sh OUT_DIR [--dry-run]" in result.stdout
    assert "set -uo pipefail" not in result.stdout  # the comment block only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "OUT_DIR is required"),
        (("--dry-run",), "OUT_DIR is required"),
        (("--bogus", "out"), "unknown option --bogus"),
        (("a", "b"), "one OUT_DIR only, got a and b"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = _run(*args)
    assert result.returncode == 2
    assert message in result.stderr
