"""Checkpoints: atomic writes, weights_only round trip of every part, RNG restore, load_model, clear errors, the
partial load of fine-tuning (load_matching)."""

import random

import pytest
import torch
from torch import nn

from rotated_ddetr.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_matching,
    load_model,
    save_checkpoint,
    set_rng_state,
)
from rotated_ddetr.config import RENAMED, Config, resolve
from tests.small_model import small_test_model_config


def _setup():
    cfg = Config()
    cfg.model = small_test_model_config()
    cfg.model.num_queries = 10
    cfg.data.classes = ("plane", "ship")
    cfg = resolve(cfg)
    torch.manual_seed(0)
    from rotated_ddetr.model import build_model

    model = build_model(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 64, 64)).logits.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    return cfg, model, optimizer, scheduler


def test_round_trip(tmp_path):
    cfg, model, optimizer, scheduler = _setup()
    path = tmp_path / "ckpt.pth"
    torch.manual_seed(123)
    random.seed(5)
    save_checkpoint(path, model, cfg, cfg.data.classes, optimizer=optimizer, scheduler=scheduler, epoch=2, step=17,
                    batches_done=3)  # fmt: skip
    expected = (torch.rand(3), random.random())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary file left behind
    state = load_checkpoint(path)
    assert (state["epoch"], state["step"], state["batches_done"]) == (2, 17, 3)
    assert state["classes"] == ["plane", "ship"] and Config.from_dict(state["config"]) == cfg
    assert state["scaler"] is None and state["scheduler"]["step_size"] == 3
    for key, value in model.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], exp_avg)
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    loaded, loaded_cfg, classes = load_model(path)
    assert classes == ("plane", "ship") and loaded_cfg == cfg and not loaded.training
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).rboxes, model.eval()(images).rboxes, rtol=0, atol=0)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    cfg, model, optimizer, _ = _setup()
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, model, cfg, cfg.data.classes, step=1)

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model, cfg, cfg.data.classes, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "other.pth")


# Config fields that came after the `train` section was split (issue 11).
ADDED_AFTER_THE_SPLIT = (
    "train.max_steps", "data.cache_images", "loss.iou_aware", "loss.kld_symmetric", "data.skip_bad_images",
    "train.init_from",
)  # fmt: skip


def test_checkpoint_with_an_old_config_loads(tmp_path):
    """A checkpoint written before the `train` section was split: its config loads with one warning."""
    cfg, model, _, _ = _setup()
    path = tmp_path / "old.pth"
    save_checkpoint(path, model, cfg, cfg.data.classes, step=1)
    state = torch.load(path, weights_only=True)
    stored = state["config"]
    old_train = dict(stored.pop("train"))
    for old, new in RENAMED.items():
        section, name = new.split(".")
        old_train[old.split(".")[1]] = stored[section].pop(name)
    for key in ADDED_AFTER_THE_SPLIT:  # fields an old checkpoint cannot hold: they load with their defaults
        section, name = key.split(".")
        (old_train if section == "train" else stored[section]).pop(name)
    assert not any(stored.pop(s) for s in ("optim", "loss", "eval", "output"))  # every moved key went back
    state["config"] = {**stored, "train": old_train}
    torch.save(state, path)
    with pytest.warns(FutureWarning, match="train.output_dir -> output.dir"):
        _, loaded_cfg, _ = load_model(path)
    assert loaded_cfg == cfg


class _Net(nn.Module):
    """A body, a BatchNorm (buffers) and a head of `classes` outputs."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body, self.norm, self.head = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, classes)


def _matching_case() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A 5-class target and the state of a 3-class source without `norm.running_var`, with an extra key and a
    float64 `body.bias`."""
    torch.manual_seed(0)
    source = _Net(3)
    source.norm.running_mean.uniform_()  # not the target's zeros
    state = {k: v.clone() for k, v in source.state_dict().items() if k != "norm.running_var"}
    state["body.bias"] = state["body.bias"].double()
    state["extra.weight"] = torch.ones(2)
    torch.manual_seed(1)
    return _Net(5), state


def _check_matching(target: _Net, report, state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> None:
    assert report.loaded == ["body.weight", "body.bias", "norm.weight", "norm.bias", "norm.running_mean",
                             "norm.num_batches_tracked"]  # fmt: skip
    assert report.mismatched == {"head.weight": ((3, 8), (5, 8)), "head.bias": ((3,), (5,))}
    assert (report.missing, report.unexpected, report.skipped) == (["norm.running_var"], ["extra.weight"], 3)
    now = target.state_dict()
    for name in report.loaded:  # copied exactly (the float64 bias cast to the model's float32)
        torch.testing.assert_close(now[name], state[name].to(now[name].dtype), rtol=0, atol=0, msg=name)
    assert now["body.bias"].dtype == torch.float32
    for name in ("head.weight", "head.bias", "norm.running_var"):  # kept their own values
        torch.testing.assert_close(now[name], fresh[name], rtol=0, atol=0, msg=name)


def test_load_matching_by_name_and_shape():
    target, state = _matching_case()
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    _check_matching(target, load_matching(target, state), state, fresh)


def test_load_matching_into_a_ddp_model(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        target, state = _matching_case()
        fresh = {k: v.clone() for k, v in target.state_dict().items()}
        wrapped = nn.parallel.DistributedDataParallel(target)
        _check_matching(target, load_matching(wrapped, state), state, fresh)  # names without "module."
    finally:
        torch.distributed.destroy_process_group()
