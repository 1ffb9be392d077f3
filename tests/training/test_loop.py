"""The training loop: schedule and parameter groups by hand, exact resume (epoch end and mid-epoch), time limit."""

import json

import pytest
import torch

from rotated_ddetr.checkpoint import load_checkpoint
from rotated_ddetr.config import OptimConfig
from rotated_ddetr.distributed import init_distributed
from rotated_ddetr.evaluation import eval_dota
from rotated_ddetr.inference import Predictor, predict_folder
from rotated_ddetr.model import build_model
from rotated_ddetr.training.loop import SetupError, train
from rotated_ddetr.training.trainer import LrSchedule, build_optimizer
from tests.small_model import small_test_model_config

from .conftest import tiny_train_config


def _losses(output_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_lr_schedule_warmup_and_step_drop():
    schedule = LrSchedule(steps_per_epoch=3, optim=OptimConfig(warmup_steps=4, lr_drop=2, lr_drop_factor=0.1))
    assert [schedule(step) for step in range(8)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1])
    assert LrSchedule(3, OptimConfig(lr_drop=0))(100) == 1.0


def test_lr_schedule_time_drop_is_saved_with_the_scheduler():
    schedule = LrSchedule(steps_per_epoch=3, optim=OptimConfig(lr_drop=0, lr_drop_factor=0.5))
    schedule.drop_from(5)
    schedule.drop_from(7)  # a later call does not postpone the drop
    assert [schedule(step) for step in (4, 5, 9)] == [1.0, 0.5, 0.5]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    state = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule).state_dict()
    fresh = LrSchedule(steps_per_epoch=3, optim=OptimConfig(lr_drop=0, lr_drop_factor=0.5))
    torch.optim.lr_scheduler.LambdaLR(optimizer, fresh).load_state_dict(state)
    assert fresh(5) == 0.5 and fresh(4) == 1.0


def test_optimizer_groups():
    model = build_model(small_test_model_config(3))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, lr_backbone=1e-4, weight_decay=0.05))
    rest, backbone = optimizer.param_groups
    assert rest["lr"] == 1e-3 and backbone["lr"] == 1e-4 and rest["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("backbone.") for p in backbone["params"])
    assert not any(names[id(p)].startswith("backbone.") for p in rest["params"])
    trainable = sum(p.requires_grad for p in model.parameters())
    assert len(backbone["params"]) + len(rest["params"]) == trainable


@pytest.fixture(scope="module")
def full_run(tiny_dataset, tmp_path_factory):
    """An uninterrupted 2-epoch run of 2 steps each: (its folder, {step: loss})."""
    output = tmp_path_factory.mktemp("full")
    result = train(tiny_train_config(tiny_dataset, output), init_distributed("cpu"), progress=False)
    assert (result.epoch, result.step, result.stopped_early) == (2, 4, False)
    return output, _losses(output)


def test_resume_reproduces_the_next_losses(tiny_dataset, full_run, tmp_path):
    ctx = init_distributed("cpu")
    full, reference = full_run
    assert sorted(reference) == [1, 2, 3, 4]
    state = load_checkpoint(full / "checkpoint_0001.pth")
    assert (state["epoch"], state["step"], state["batches_done"]) == (1, 2, 0)
    assert state["config"]["data"]["train_root"] == str(tiny_dataset) and len(state["classes"]) == 6
    assert json.loads((full / "config.json").read_text()) == state["config"]
    assert (full / "tensorboard").is_dir() and (full / "checkpoint_0002.pth").is_file()
    # From the end of epoch 1: steps 3 and 4 again, with the lr drop of epoch 2.
    cfg = tiny_train_config(tiny_dataset, tmp_path / "resumed")
    train(cfg, ctx, resume=full / "checkpoint_0001.pth", progress=False)
    resumed = _losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step
    final = load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pth")["model"]
    for key, value in load_checkpoint(full / "checkpoint_last.pth")["model"].items():
        torch.testing.assert_close(final[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_time_limit_stops_mid_epoch_and_resumes(tiny_dataset, full_run, tmp_path):
    ctx = init_distributed("cpu")
    reference = full_run[1]
    stopped = train(tiny_train_config(tiny_dataset, tmp_path / "cut", train={"max_minutes": 1e-6}), ctx, progress=False)
    assert stopped.stopped_early and (stopped.epoch, stopped.step) == (0, 1)
    state = load_checkpoint(tmp_path / "cut" / "checkpoint_last.pth")
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 1, 1)
    assert not list((tmp_path / "cut").glob("checkpoint_0*.pth"))
    train(tiny_train_config(tiny_dataset, tmp_path / "cut"), ctx, resume=stopped.checkpoint, progress=False)
    resumed = _losses(tmp_path / "cut")
    assert sorted(resumed) == [1, 2, 3, 4]  # step 1 from the cut run, then 2-4 from the resumed one
    for step in (2, 3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


def test_time_budget_drops_the_learning_rate(tiny_dataset, tmp_path):
    ctx = init_distributed("cpu")
    cfg = tiny_train_config(
        tiny_dataset, tmp_path / "drop", train={"max_minutes": 1e-6}, optim={"lr_drop": 0, "lr_drop_time": 0.5}
    )
    train(cfg, ctx, progress=False)
    records = [json.loads(line) for line in (tmp_path / "drop" / "log.jsonl").read_text().splitlines()]
    drop = [r for r in records if r["kind"] == "lr_drop"]
    assert len(drop) == 1 and drop[0]["step"] == 1
    assert drop[0]["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.lr_drop_factor)  # warmup (2 steps) done at step 1
    scheduler = load_checkpoint(tmp_path / "drop" / "checkpoint_last.pth")["scheduler"]
    assert scheduler["lr_lambdas"][0]["drop_step"] == 1


def test_step_budget_stops_mid_epoch_and_drops_the_learning_rate_at_its_fraction(tiny_dataset, tmp_path):
    ctx = init_distributed("cpu")
    cfg = tiny_train_config(tiny_dataset, tmp_path / "steps", train={"epochs": 5, "max_steps": 3},
                            optim={"lr_drop": 0, "lr_drop_time": 0.5})  # fmt: skip
    result = train(cfg, ctx, progress=False)
    assert (result.epoch, result.step, result.stopped_early) == (1, 3, True)  # 2 steps per epoch: 1 epoch + 1 batch
    records = [json.loads(line) for line in (tmp_path / "steps" / "log.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}  # the rate each step ran at
    lr, dropped = cfg.optim.lr, cfg.optim.lr * cfg.optim.lr_drop_factor  # warmup: 2 steps; drop from round(1.5) on
    assert lrs == pytest.approx({1: lr / 2, 2: lr, 3: dropped})
    state = load_checkpoint(tmp_path / "steps" / "checkpoint_last.pth")
    assert (state["step"], state["batches_done"], state["scheduler"]["lr_lambdas"][0]["drop_step"]) == (3, 1, 2)
    again = train(cfg, ctx, resume=tmp_path / "steps" / "checkpoint_last.pth", progress=False)
    assert again.step == 3  # the budget is spent: a resumed run trains no further


def test_periodic_evaluation_scores_the_saved_model_as_the_inference_path_does(tiny_dataset, tmp_path):
    # The epoch's checkpoint is written before its evaluation: the same weights through Predictor.from_checkpoint
    # and predict_folder (what tools/test.py runs) must give the logged metrics exactly.
    cfg = tiny_train_config(tiny_dataset, tmp_path / "eval", train={"epochs": 1}, eval={"every": 1})
    cfg.data.val_root = str(tiny_dataset)
    result = train(cfg, init_distributed("cpu"), progress=False)
    predictor = Predictor.from_checkpoint(tmp_path / "eval" / "checkpoint_last.pth")
    detections = predict_folder(predictor, tiny_dataset, batch_size=cfg.train.batch_size)
    expected = eval_dota(detections, tiny_dataset / "labelTxt", classes=list(cfg.data.classes))
    assert result.metrics == {"mAP": expected["mAP"], **{f"AP/{k}": v for k, v in expected["AP"].items()}}
    records = [json.loads(line) for line in (tmp_path / "eval" / "log.jsonl").read_text().splitlines()]
    assert [r["mAP"] for r in records if r["kind"] == "eval"] == [expected["mAP"]]
    assert sum(len(d) for d in detections.values()) > 0


def test_setup_errors(tiny_dataset, tmp_path):
    ctx = init_distributed("cpu")
    with pytest.raises(SetupError, match="dataset folder not found"):
        train(tiny_train_config(tmp_path / "missing", tmp_path / "out"), ctx, progress=False)
    with pytest.raises(SetupError, match="checkpoint not found"):
        train(tiny_train_config(tiny_dataset, tmp_path / "out"), ctx, resume=tmp_path / "none.pth", progress=False)
