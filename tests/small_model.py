"""The small detector config the unit tests build: fast on a CPU, not a model anyone trains for results."""

from rotated_ddetr.config import ModelConfig


def small_test_model_config(num_classes: int = 15) -> ModelConfig:
    """A small `ModelConfig` for unit tests: ResNet-18 (4 stages, frozen BatchNorm), d_model 64, 4 heads,
    2 + 2 layers, FFN 128, no dropout, 100 queries, two-stage with refinement.

    Not the shipped `synthetic_tiny` config: that is the trained CPU model of the README (ResNet-18 without layer4,
    trainable BatchNorm, FFN 256, 300 queries, query denoising); this one only keeps the tests fast.
    """
    return ModelConfig(depth=18, d_model=64, n_heads=4, enc_layers=2, dec_layers=2, ffn_dim=128, dropout=0.0,
                       num_queries=100, num_classes=num_classes)  # fmt: skip
