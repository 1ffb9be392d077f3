"""The installed command `rotated-ddetr`: the overview, every subcommand's --help, shipped configs by short name,
`train --print-config` (a JSON config that loads back equal), and a plain (non-editable) install that works with no
repository around it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rotated_ddetr.cli.main import PROG, SUBCOMMANDS, main
from rotated_ddetr.config import ConfigError, load_config, shipped_configs

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["train", "test", "infer", "evaluate", "split", "synth", "convert", "export"]  # the list


def test_the_overview_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert list(SUBCOMMANDS) == EXPECTED
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith("  -")]
    assert listed == EXPECTED
    assert main([]) == 2 and capsys.readouterr().out.startswith(f"usage: {PROG} SUBCOMMAND")


def test_an_unknown_subcommand_is_one_line(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err == f"{PROG}: error: unknown subcommand 'trian'; expected one of {', '.join(EXPECTED)}\n"


@pytest.mark.parametrize("name", EXPECTED)
def test_every_subcommand_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert out.startswith(f"usage: {PROG} {name} ")
    assert "tools/" not in out and "python tools" not in out  # the help names the installed command


def test_shipped_configs_load_by_short_name():
    shipped = shipped_configs()
    assert sorted(shipped) == ["dota_v1_r50", "synthetic_tiny"]
    assert load_config("synthetic_tiny") == load_config(shipped["synthetic_tiny"])
    assert load_config("dota_v1_r50").model.depth == 50 and load_config("synthetic_tiny").model.depth == 18
    with pytest.raises(ConfigError, match=r"unknown config 'synthetic_tini'.*did you mean 'synthetic_tiny'\?"):
        load_config("synthetic_tini")


def test_print_config_loads_back_to_an_equal_config(tmp_path, capsys):
    overrides = ["train.epochs=3", "optim.lr=2e-4", "model.num_queries=100"]
    assert main(["train", "--print-config", "synthetic_tiny", *overrides]) == 0
    printed = tmp_path / "config.json"
    printed.write_text(capsys.readouterr().out)
    expected = load_config("synthetic_tiny", overrides)
    assert load_config(printed) == expected
    assert load_config(printed, ["train.epochs=4"]).train.epochs == 4  # a JSON config takes overrides too
    assert json.loads(printed.read_text())["train"]["epochs"] == 3


def test_a_bad_json_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"epochz": 3}}')
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train: config error: {bad}: ") and "epochz" in err and err.count("\n") == 1


def _plain_install(tmp_path: Path) -> tuple[Path, dict]:
    """`pip install .` (not editable, no compiled ops: ROTATED_DDETR_NO_EXT=1) of a copy of the package's sources
    into a target folder; returns the folder and an environment that imports it from there."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "rotated_ddetr", src / "rotated_ddetr", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    target = tmp_path / "installed"
    env = {**os.environ, "ROTATED_DDETR_NO_EXT": "1", "PIP_NO_INDEX": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, env=env, capture_output=True)  # fmt: skip
    env = {key: value for key, value in env.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    return target, env


def _run(target: Path, env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(target / "bin" / "rotated-ddetr"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True)  # fmt: skip


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain_install")
    target, env = _plain_install(tmp)
    work = tmp / "elsewhere"  # no checkout, no tools/ folder, no configs/ around
    work.mkdir()
    return target, env, work


def test_a_plain_install_runs_without_the_repository(plain_install):
    target, env, work = plain_install
    where = subprocess.run([sys.executable, "-c", "import rotated_ddetr; print(rotated_ddetr.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(target)  # the installed copy, not the checkout
    overview = _run(target, env, work, "--help")
    assert overview.returncode == 0 and all(f"  {name} " in overview.stdout for name in EXPECTED)
    printed = _run(target, env, work, "train", "--print-config", "synthetic_tiny", "train.epochs=2")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["train"]["epochs"] == 2
    assert json.loads(printed.stdout)["data"]["classes"] == list(load_config("synthetic_tiny").data.classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_a_plain_install_has_every_subcommands_help(plain_install, name):
    target, env, work = plain_install
    result = _run(target, env, work, name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {PROG} {name} ")


def test_python_dash_m_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "rotated_ddetr", "--version"], capture_output=True, text=True,
                            cwd=ROOT)  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith(f"{PROG} ")
