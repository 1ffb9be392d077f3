"""Shared by the training tests (and tests/test_faults.py): a config small enough for CPU tests, for the tiny
synthetic dataset of tests/conftest.py (`tiny_dataset`)."""

from pathlib import Path

from rotated_ddetr.config import Config, resolve
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES
from tests.small_model import small_test_model_config


def tiny_train_config(train_root: Path, output_dir: Path, **sections: dict) -> Config:
    """A resolved config of a very small model (d_model 32, 1 + 1 layers, 10 queries) on `train_root`.

    `sections` override fields by section, e.g. `train={"max_minutes": 1e-6}, optim={"lr_drop": 0}`.
    """
    cfg = Config()
    cfg.model = small_test_model_config()
    cfg.model.backbone_norm, cfg.model.frozen_stages = "batch", 0
    cfg.model.d_model, cfg.model.ffn_dim, cfg.model.enc_layers, cfg.model.dec_layers = 32, 64, 1, 1
    cfg.model.num_queries = 10
    cfg.data.classes, cfg.data.train_root = SYNTHETIC_CLASSES, str(train_root)
    cfg.data.rotate, cfg.data.rotate_degrees, cfg.data.scale_jitter = 0.5, 30.0, (0.9, 1.1)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.num_workers, cfg.output.log_every = 2, 2, 0, 1
    cfg.optim.lr, cfg.optim.lr_backbone, cfg.optim.warmup_steps, cfg.optim.lr_drop = 1e-3, 1e-3, 2, 1
    cfg.eval.every, cfg.output.dir = 0, str(output_dir)
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return resolve(cfg)
