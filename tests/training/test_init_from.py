"""Fine-tuning (`train.init_from`): the report and its grouping, a partial load from release weights, and training
runs that start from a briefly trained checkpoint (lower first loss, another class list, resume, errors)."""

import json
import math

import pytest
import torch

from rotated_ddetr.checkpoint import MatchReport, save_weights
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES
from rotated_ddetr.distributed import init_distributed
from rotated_ddetr.model import build_model
from rotated_ddetr.training.init_from import InitReport, group_names, init_from
from rotated_ddetr.training.loop import SetupError, train

from .conftest import tiny_train_config

CPU = init_distributed("cpu")
NO_AUGMENTATION = {"hflip": 0.0, "vflip": 0.0, "rot90": 0.0, "rotate": 0.0, "scale_jitter": (1.0, 1.0)}
CLASS_HEADS = {  # d_model 32 (tiny_train_config): 6 synthetic classes in the file, 7 in the new run
    "decoder.class_heads.0.weight": [[6, 32], [7, 32]], "decoder.class_heads.0.bias": [[6], [7]],
    "proposals.class_head.weight": [[6, 32], [7, 32]], "proposals.class_head.bias": [[6], [7]],
}  # fmt: skip


def _records(output_dir, kind: str) -> list[dict]:
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == kind]


def _one_step(train_root, output_dir, **train_values):
    """One optimiser step without augmentation; train.init_from etc. from `train_values`, classes from "classes"."""
    classes = train_values.pop("classes", SYNTHETIC_CLASSES)
    cfg = tiny_train_config(train_root, output_dir, train={"max_steps": 1, **train_values},
                            data={**NO_AUGMENTATION, "classes": classes})  # fmt: skip
    return train(cfg, CPU, progress=False)


def test_group_names_collapses_layer_indices():
    names = ["decoder.class_heads.0.weight", "decoder.class_heads.1.weight", "decoder.class_heads.0.bias",
             "decoder.class_heads.1.bias", "proposals.class_head.bias"]  # fmt: skip
    detail = {name: "[6] -> [7]" for name in names if name.endswith("bias")}
    assert group_names(names, detail, limit=8) == [
        "decoder.class_heads.{0,1}.weight", "decoder.class_heads.{0,1}.bias [6] -> [7]",
        "proposals.class_head.bias [6] -> [7]",
    ]  # fmt: skip
    # More groups than the limit: grouped by module (one level up at a time), singles by their full name.
    layers = [f"encoder.layers.{i}.{leaf}" for i in (0, 1) for leaf in ("attn.weight", "attn.bias", "ffn.weight")]
    names = [*layers, "level_embed", "decoder.class_heads.0.bias"]
    assert group_names(names, detail, limit=3) == [
        "encoder.layers.{0,1}.* (6)", "level_embed", "decoder.class_heads.0.bias [6] -> [7]"
    ]  # fmt: skip
    many = [f"layer{i}.weight" for i in range(5)]
    assert group_names(many, {}, limit=2) == ["layer0.weight", "layer1.weight", "... 3 more groups (every name is "
                                              "in log.jsonl)"]  # fmt: skip


def test_report_record_and_summary():
    match = MatchReport(loaded=["a.weight"], mismatched={"head.weight": ((6, 4), (7, 4))}, missing=["dn.weight"],
                        unexpected=["old.weight"])  # fmt: skip
    report = InitReport("w.pth", match, ("a", "b"), ("a", "b", "c"))
    record = report.record()
    assert (record["loaded"], record["skipped"], record["unexpected"], record["same_classes"]) == (1, 2, 1, False)
    assert record["shape_mismatch"] == {"head.weight": [[6, 4], [7, 4]]} and record["missing_in_file"] == ["dn.weight"]
    lines = report.summary().splitlines()
    assert lines[0] == "init_from w.pth: loaded 1 of the model's 3 tensors; 2 keep their fresh initialisation"
    assert lines[1] == "  shape differs (file -> model), 1: head.weight [6, 4] -> [7, 4]"
    assert lines[2:4] == ["  missing in the file, 1: dn.weight", "  only in the file (ignored), 1: old.weight"]
    assert lines[4] == "  the file was trained for classes ['a', 'b'], data.classes is ['a', 'b', 'c']"
    renamed = InitReport("w.pth", match, ("a", "b"), ("a", "c")).summary().splitlines()
    assert renamed[-1] == "  (same count: the class heads loaded by position, row i = the file's class i)"
    assert len(InitReport("w.pth", match, ("a", "b"), ("a", "b")).summary().splitlines()) == 4


def test_init_from_release_weights_loads_all_but_the_class_heads(tmp_path):
    source_cfg = tiny_train_config(tmp_path, tmp_path / "out")
    torch.manual_seed(0)
    source = build_model(source_cfg.model)
    save_weights(tmp_path / "w.safetensors", source, source_cfg, SYNTHETIC_CLASSES)
    cfg = tiny_train_config(tmp_path, tmp_path / "out", data={"classes": (*SYNTHETIC_CLASSES, "extra")})
    torch.manual_seed(1)
    model = build_model(cfg.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from(model, tmp_path / "w.safetensors", cfg.data.classes, cfg.to_dict()["model"])
    assert report.record()["shape_mismatch"] == CLASS_HEADS and not report.match.missing
    now, original = model.state_dict(), source.state_dict()
    assert len(report.match.loaded) == len(now) - 4
    for name in report.match.loaded:
        torch.testing.assert_close(now[name], original[name], rtol=0, atol=0, msg=name)
    for name in CLASS_HEADS:
        torch.testing.assert_close(now[name], fresh[name], rtol=0, atol=0, msg=name)
    other = torch.nn.Linear(3, 2)
    save_weights(tmp_path / "other.safetensors", other, cfg, SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match=r"other.safetensors: none of its 2 tensors matches this model"):
        init_from(model, tmp_path / "other.safetensors", cfg.data.classes, cfg.to_dict()["model"])


@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory):
    """A checkpoint trained for 10 steps (5 epochs of 2) at lr 2e-3 on the tiny dataset (about 5 s on 2 cores)."""
    output = tmp_path_factory.mktemp("pretrained")
    cfg = tiny_train_config(tiny_dataset, output, train={"epochs": 5}, data=NO_AUGMENTATION,
                            optim={"lr": 2e-3, "lr_backbone": 2e-3, "lr_drop": 0})  # fmt: skip
    assert train(cfg, CPU, progress=False).step == 10
    return output / "checkpoint_last.pth"


def test_fine_tuning_starts_from_a_lower_loss(tiny_dataset, pretrained, tmp_path):
    # Same seed, data and first batch; the first logged loss is that of the initial weights. Measured: 17.11 from
    # scratch, 10.52 from the checkpoint (39% lower).
    _one_step(tiny_dataset, tmp_path / "scratch")
    _one_step(tiny_dataset, tmp_path / "tuned", init_from=str(pretrained))
    scratch, tuned = (_records(tmp_path / name, "train")[0] for name in ("scratch", "tuned"))
    assert tuned["loss"] < 0.75 * scratch["loss"], (tuned["loss"], scratch["loss"])
    assert tuned["step"] == 1 and tuned["lr"] == scratch["lr"]  # a fresh schedule: step 1, the warmup's rate
    (record,) = _records(tmp_path / "tuned", "init_from")
    assert (record["step"], record["from"], record["skipped"], record["same_classes"]) == (0, str(pretrained), 0, True)
    assert record["loaded"] == len(torch.load(pretrained, weights_only=True)["model"])
    state = torch.load(tmp_path / "tuned" / "checkpoint_last.pth", weights_only=True)
    assert state["step"] == 1 and state["scheduler"]["last_epoch"] == 1  # not the pretrained run's 10


def test_fine_tuning_to_another_class_list_skips_the_class_heads(tiny_dataset, pretrained, tmp_path, capsys):
    result = _one_step(tiny_dataset, tmp_path / "more", init_from=str(pretrained), classes=(*SYNTHETIC_CLASSES, "x"))
    assert result.step == 1
    (record,) = _records(tmp_path / "more", "init_from")
    assert record["shape_mismatch"] == CLASS_HEADS and record["missing_in_file"] == [] and not record["same_classes"]
    assert record["loaded"] == len(torch.load(pretrained, weights_only=True)["model"]) - 4
    assert math.isfinite(_records(tmp_path / "more", "train")[0]["loss"])
    printed = capsys.readouterr().out
    assert (
        "4 keep their fresh initialisation" in printed and "decoder.class_heads.0.weight [6, 32] -> [7, 32]" in printed
    )


def test_resume_wins_over_init_from(tiny_dataset, pretrained, tmp_path):
    run = tmp_path / "run"
    _one_step(tiny_dataset, run, init_from=str(pretrained))
    # The resumed run restores its own state and does not read train.init_from (here a file that is gone).
    cfg = tiny_train_config(tiny_dataset, run, train={"max_steps": 2, "init_from": str(tmp_path / "gone.pth")},
                            data=NO_AUGMENTATION)  # fmt: skip
    assert train(cfg, CPU, resume=run / "checkpoint_last.pth", progress=False).step == 2
    first, resumed = _records(run, "init_from")
    assert first["loaded"] > 0 and resumed["step"] == 1 and resumed["ignored"].startswith("ignored: --resume")


def test_init_from_errors_name_the_file(tiny_dataset, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    save_weights(tmp_path / "other.safetensors", torch.nn.Linear(3, 2), tiny_train_config(tmp_path, tmp_path), ("a",))
    cases = {
        "missing.pth": "checkpoint not found: .*missing.pth",
        "junk.pth": ".*junk.pth: cannot read the checkpoint",
        "other.safetensors": ".*other.safetensors: none of its 2 tensors matches this model",
    }
    for name, message in cases.items():
        with pytest.raises(SetupError, match=f"^train.init_from: {message}") as error:
            _one_step(tiny_dataset, tmp_path / name.replace(".", "_"), init_from=str(tmp_path / name))
        assert "\n" not in str(error.value)
        assert not (tmp_path / name.replace(".", "_") / "log.jsonl").exists()  # stopped before the run began
