"""Config: files defining `cfg` (with a base imported by path), dotted overrides, errors, derived values, JSON."""

import json

import pytest

from rotated_ddetr.config import Config, ConfigError, apply_overrides, load_config, load_config_file, resolve
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def config_files(tmp_path):
    base = _write(
        tmp_path / "base.py",
        "from rotated_ddetr.config import Config\ncfg = Config()\ncfg.model.depth = 18\ncfg.train.lr = 1e-3\n",
    )
    child = _write(
        tmp_path / "child.py",
        "from pathlib import Path\n"
        "from rotated_ddetr.config import load_config_file\n"
        "from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES\n"
        "cfg = load_config_file(Path(__file__).with_name('base.py'))\n"
        "cfg.data.classes = SYNTHETIC_CLASSES\n"
        "cfg.model.num_queries = 120\n",
    )
    return base, child


def test_file_with_base_overrides_and_derived(config_files):
    base, child = config_files
    cfg = load_config(child, ["train.lr=5e-4", "data.scale_jitter=0.8,1.25", "model.pretrained=none"])
    assert cfg.model.depth == 18 and cfg.model.num_queries == 120
    assert cfg.train.lr == pytest.approx(5e-4) and cfg.data.scale_jitter == (0.8, 1.25)
    assert cfg.data.classes == SYNTHETIC_CLASSES and cfg.model.num_classes == 6  # derived after overrides
    assert load_config(child, ["data.classes=plane,ship"]).model.num_classes == 2
    assert load_config(base).model.num_classes == 15  # DOTA-v1.0 classes by default
    # Loading twice gives independent objects (no state shared through the base).
    a, b = load_config_file(child), load_config_file(child)
    a.train.lr = 1.0
    assert b.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_querys=3", "did you mean model.num_queries"),
        ("optim.lr=1", "unknown config key"),
        ("model.num_classes=3", "derived"),
        ("train.lr=fast", "train.lr must be float"),
        ("train.epochs=1.5", "must be an integer"),
        ("model.depth=19", r"must be one of \[18, 34, 50, 101\]"),
        ("train.amp=fp32", "must be one of"),
        ("model.two_stage=maybe", "true or false"),
        ("data.scale_jitter=1,2,3", "must have 2 items"),
        ("train.lr", "not key=value"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_override_value_types():
    cfg = apply_overrides(
        Config(),
        ["model.depth=34", "model.two_stage=false", "train.max_minutes=2.5", "data.drop_difficult=(1, 2)",
         "data.val_root=/tmp/x", "data.val_root=none", "train.epochs=1e1", "data.drop_difficult=()"],
    )  # fmt: skip
    assert cfg.model.depth == 34 and cfg.model.two_stage is False and cfg.train.max_minutes == 2.5
    assert cfg.data.val_root is None and cfg.train.epochs == 10 and cfg.data.drop_difficult == ()
    assert Config().model.depth == 50  # overrides never touch the input


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model=48", "multiple of 32"),
        ("train.batch_size=0", "batch_size"),
        ("data.drop_difficult=3", "drop_difficult"),
        ("train.max_minutes=0", "max_minutes"),
        ("data.hflip=1.5", "probabilities"),
    ],
)
def test_range_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(apply_overrides(Config(), [override]))


def test_wrong_types_in_a_file(tmp_path):
    head = "from rotated_ddetr.config import Config\ncfg = Config()\n"
    path = _write(tmp_path / "bad.py", head + "cfg.train.lr = '1e-4'\n")
    with pytest.raises(ConfigError, match="train.lr must be float"):
        load_config(path)
    path = _write(tmp_path / "derived.py", head + "cfg.model.num_classes = 3\n")
    with pytest.raises(ConfigError, match="derived"):
        load_config(path)
    with pytest.raises(ConfigError, match="must define"):
        load_config(_write(tmp_path / "none.py", "x = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.py")


def test_dict_round_trip_through_json(config_files):
    cfg = load_config(config_files[1], ["data.drop_difficult=1,2"])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["data"]["drop_difficult"] == [1, 2] and data["model"]["num_classes"] == 6
    assert Config.from_dict(data) == cfg
    with pytest.raises(ConfigError, match="unknown config key"):
        Config.from_dict({"model": {"layers": 3}})
    with pytest.raises(ConfigError, match="unknown config section"):
        Config.from_dict({"optim": {}})
