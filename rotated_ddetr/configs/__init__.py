"""The shipped configs, each a Python file defining `cfg`; named by their short names anywhere a config is expected:
`rotated-ddetr train synthetic_tiny`, `load_config("dota_v1_r50")` (`rotated_ddetr.config.shipped_configs()`).

- `synthetic_tiny`: a ResNet-18 (3 stages), 64-wide detector for the procedural synthetic set (512 px) that trains on
  a CPU in minutes; the README's quick start.
- `dota_v1_r50`: DOTA-v1.0 on 1024 x 1024 tiles, ResNet-50, two-stage + iterative refinement, 500 queries.

Copy one as the base of your own: `cfg = load_config_file("synthetic_tiny")`, then set fields.
"""
