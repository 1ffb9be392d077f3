"""Config: files defining `cfg` (with a base imported by path), dotted overrides, errors, derived values, JSON,
and the old (pre-split `train` section) key names."""

import json
import warnings

import pytest

from rotated_ddetr.config import (
    Config,
    ConfigError,
    EvalConfig,
    LossConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    load_config_file,
    resolve,
)
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def config_files(tmp_path):
    base = _write(
        tmp_path / "base.py",
        "from rotated_ddetr.config import Config\ncfg = Config()\ncfg.model.depth = 18\ncfg.optim.lr = 1e-3\n",
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
    cfg = load_config(child, ["optim.lr=5e-4", "data.scale_jitter=0.8,1.25", "model.pretrained=none"])
    assert cfg.model.depth == 18 and cfg.model.num_queries == 120
    assert cfg.optim.lr == pytest.approx(5e-4) and cfg.data.scale_jitter == (0.8, 1.25)
    assert cfg.data.classes == SYNTHETIC_CLASSES and cfg.model.num_classes == 6  # derived after overrides
    assert load_config(child, ["data.classes=plane,ship"]).model.num_classes == 2
    assert load_config(base).model.num_classes == 15  # DOTA-v1.0 classes by default
    # Loading twice gives independent objects (no state shared through the base).
    a, b = load_config_file(child), load_config_file(child)
    a.optim.lr = 1.0
    assert b.optim.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_querys=3", "did you mean model.num_queries"),
        ("solver.lr=1", "unknown config key"),
        ("train.lrr=1", "did you mean optim.lr"),  # close to an old key: its new name is suggested
        ("model.num_classes=3", "derived"),
        ("optim.lr=fast", "optim.lr must be float"),
        ("train.epochs=1.5", "must be an integer"),
        ("model.depth=19", r"must be one of \[18, 34, 50, 101\]"),
        ("train.amp=fp32", "must be one of"),
        ("model.two_stage=maybe", "true or false"),
        ("data.scale_jitter=1,2,3", "must have 2 items"),
        ("optim.lr", "not key=value"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_override_value_types():
    cfg = apply_overrides(
        Config(),
        ["model.depth=34", "model.two_stage=false", "train.max_minutes=2.5", "data.drop_difficult=(1, 2)",
         "data.val_root=/tmp/x", "data.val_root=none", "train.epochs=1e1", "data.drop_difficult=()",
         "train.init_from=runs/a/checkpoint_last.pth"],
    )  # fmt: skip
    assert cfg.train.init_from == "runs/a/checkpoint_last.pth" and Config().train.init_from is None
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
        ("eval.score_threshold=1.5", r"eval.score_threshold must be in \[0, 1\], got 1.5"),
        ("train.init_from=", "train.init_from must be a file path or none"),
    ],
)
def test_range_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(apply_overrides(Config(), [override]))


def test_wrong_types_in_a_file(tmp_path):
    head = "from rotated_ddetr.config import Config\ncfg = Config()\n"
    path = _write(tmp_path / "bad.py", head + "cfg.optim.lr = '1e-4'\n")
    with pytest.raises(ConfigError, match="optim.lr must be float"):
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
        Config.from_dict({"solver": {}})


# The `train` section as checkpoints written before the split store it: every old key, each with its own value.
OLD_TRAIN = {
    "epochs": 7, "lr": 3e-4, "lr_backbone": 3e-5, "weight_decay": 0.05, "clip_max_norm": 0.2, "lr_drop": 5,
    "lr_drop_factor": 0.5, "lr_drop_time": 0.7, "warmup_steps": 11, "batch_size": 3, "num_workers": 0, "amp": "bf16",
    "seed": 5, "eval_every": 2, "log_every": 9, "max_minutes": 12.0, "keep_last": 4, "output_dir": "work/old",
    "device": "cpu", "class_weight": 1.5, "l1_weight": 4.5, "overlap_weight": 2.5, "angle_weight": 1.25,
    "match_class_weight": 1.75, "match_l1_weight": 4.25, "match_iou_weight": 2.25, "match_gaussian_weight": 0.5,
    "enc_positives": 3, "focal_alpha": 0.3, "focal_gamma": 1.5, "eval_top_k": 1000, "eval_score_thr": 0.05,
    "eval_nms_iou": 0.4,
}  # fmt: skip


def test_old_checkpoint_config_loads_to_the_new_sections():
    stored = Config().to_dict()
    old = {"model": stored["model"], "data": stored["data"], "train": OLD_TRAIN}
    with pytest.warns(FutureWarning, match="train.eval_top_k -> eval.top_k") as caught:
        cfg = Config.from_dict(json.loads(json.dumps(old)))
    assert len(caught) == 1 and "train.overlap_weight -> loss.kld_weight" in str(caught[0].message)
    expected = Config(
        train=TrainConfig(epochs=7, batch_size=3, num_workers=0, amp="bf16", seed=5, max_minutes=12.0, device="cpu"),
        optim=OptimConfig(lr=3e-4, lr_backbone=3e-5, weight_decay=0.05, clip_max_norm=0.2, lr_drop=5,
                          lr_drop_factor=0.5, lr_drop_time=0.7, warmup_steps=11),
        loss=LossConfig(class_weight=1.5, l1_weight=4.5, kld_weight=2.5, angle_weight=1.25, enc_positives=3,
                        focal_alpha=0.3, focal_gamma=1.5, match_class_weight=1.75, match_l1_weight=4.25,
                        match_iou_weight=2.25, match_kld_weight=0.5),
        eval=EvalConfig(every=2, top_k=1000, score_threshold=0.05, nms_iou=0.4),
        output=OutputConfig(dir="work/old", log_every=9, keep_last=4),
    )  # fmt: skip
    assert cfg == expected


def test_old_override_keys_set_the_new_ones():
    old = ["train.eval_top_k=5", "train.output_dir=/tmp/o", "train.overlap_weight=3", "train.eval_score_thr=0.1"]
    with pytest.warns(FutureWarning, match="override: .*train.output_dir -> output.dir") as caught:
        cfg = apply_overrides(Config(), [*old, "train.epochs=3"])
    assert len(caught) == 1
    assert (cfg.eval.top_k, cfg.output.dir, cfg.loss.kld_weight, cfg.eval.score_threshold) == (5, "/tmp/o", 3.0, 0.1)
    assert cfg.train.epochs == 3


@pytest.mark.parametrize(
    "line, message",
    [
        ("cfg.train.eval_top_k = 1000", "'train.eval_top_k' was renamed 'eval.top_k'"),
        ("cfg.train.output_dir = 'x'", "'train.output_dir' was renamed 'output.dir'"),
        ("cfg.train.epochz = 1", "unknown config key 'train.epochz'; did you mean train.epochs?"),
        ("cfg.loss.overlap_weight = 1.0", "unknown config key 'loss.overlap_weight'; did you mean loss.kld_weight?"),
        ("cfg.optimizer = None", "unknown config key 'optimizer'"),
    ],
)
def test_renamed_or_unknown_attribute_in_a_file(tmp_path, line, message):
    path = _write(tmp_path / "old.py", f"from rotated_ddetr.config import Config\ncfg = Config()\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_renamed_attribute_read_names_the_new_key():
    with pytest.raises(AttributeError, match="renamed 'eval.score_threshold'"):
        _ = Config().train.eval_score_thr


def test_every_section_round_trips_without_warnings():
    cfg = apply_overrides(Config(), ["model.depth=18", "data.scale=0.5", "train.seed=3", "optim.lr=1e-3",
                                     "loss.kld_weight=1.5", "eval.top_k=50", "output.dir=/tmp/run"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and list(cfg.to_dict()) == ["model", "data", "train", "optim", "loss", "eval", "output"]
