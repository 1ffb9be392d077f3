"""The shipped dota_v1_r50 config as configured (ResNet-50, 1024 px, 500 queries, two-stage + refinement) trains on CPU.

Two optimiser steps on synthetic 1024-px tiles through the loop's Trainer. Slow: about 30 s per step, 70 s in all,
and 10 GiB peak RSS on the 2-core CPU (benchmarks/RESULTS.md, measured with benchmarks/bench_train_step.py).
"""

import math

import pytest
import torch

from rotated_ddetr.config import load_config
from rotated_ddetr.data.batching import collate
from rotated_ddetr.data.synthetic import training_samples
from rotated_ddetr.model import build_model
from rotated_ddetr.training.trainer import build_trainer

CONFIG = "dota_v1_r50"
SIZE = 1024


@pytest.mark.slow
def test_two_steps_of_the_r50_config_on_cpu():
    cfg = load_config(CONFIG)
    m, t = cfg.model, cfg.train
    assert (m.depth, m.num_queries, m.two_stage, m.box_refine, m.pretrained) == (50, 500, True, True, None)
    torch.manual_seed(0)
    model = build_model(m)
    trainer = build_trainer(cfg, model, torch.device("cpu"), steps_per_epoch=1)
    batch = collate(training_samples(0, t.batch_size, SIZE, cfg.data.classes), model.size_divisor)
    assert all(len(target) > 0 for target in batch.targets)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    outputs = []
    hook = model.register_forward_hook(lambda module, args, output: outputs.append(output))
    logs = [trainer.step(batch) for _ in range(2)]
    hook.remove()

    for log in logs:
        assert all(math.isfinite(v) for v in log.values()), log
        assert log["loss"] > 0 and log["grad_norm"] > 0
    # AdamW moves every trainable tensor (the frozen stem and layer1 have none); the backbone at its own rate.
    changed = {name for name, p in model.named_parameters() if name in before and not torch.equal(p, before[name])}
    assert len(changed) == len(before)
    assert any(name.startswith("backbone.") for name in changed)
    # Shapes: 6 decoder layers x (B, 500 queries, 15 DOTA classes); S = tokens of strides 8, 16, 32, 64.
    out, batch_size, tokens = outputs[-1], t.batch_size, sum((SIZE // s) ** 2 for s in (8, 16, 32, 64))
    assert out.logits.shape == (6, batch_size, 500, 15) and out.rboxes.shape == (6, batch_size, 500, 5)
    assert out.enc_logits.shape == (batch_size, 500, 15) and out.enc_rboxes.shape == (batch_size, 500, 5)
    assert out.dense.logits.shape == (batch_size, tokens, 15) and out.dense.rboxes.shape == (batch_size, tokens, 5)
    assert out.image_sizes.tolist() == [[SIZE, SIZE]] * batch_size
