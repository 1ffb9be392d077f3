"""DOTA-v1.0, 1024 x 1024 tiles (rotated-ddetr split), ResNet-50, two-stage + iterative refinement, 500 queries.

Deformable DETR's recipe: AdamW 2e-4 (backbone 2e-5), weight decay 1e-4, gradient clipping 0.1, 50 epochs with a
x0.1 drop after epoch 40, batch 2 per GPU (e.g. 8 GPUs under torchrun). The backbone should start from ImageNet
weights in a local file (nothing is downloaded):
    rotated-ddetr train dota_v1_r50 model.pretrained=/models/resnet50-0676ba61.pth
Without them, train the backbone from scratch with model.backbone_norm=batch model.frozen_stages=0.

On top of that recipe, what shortened training of the tiny synthetic config (benchmarks/RESULTS.md, issue 11) and
applies here: query denoising (5 groups), one-to-many supervision of the two-stage proposals (4 tokens per object),
the elongation-weighted angle loss, the varifocal class loss towards the rotated IoU, the symmetric KLD loss, and
bf16 autocast where the device computes it natively (Ampere+ GPUs; train.amp=none for float32). Not yet measured on
DOTA itself.
"""

from rotated_ddetr.config import Config
from rotated_ddetr.data.dota import DOTA_V1_0_CLASSES

cfg = Config()
cfg.data.classes = DOTA_V1_0_CLASSES
cfg.data.train_root = "data/dota/trainval_1024"
cfg.data.val_root = None
cfg.data.drop_difficult = ()
cfg.data.keep_empty = False
cfg.data.scale = 1.0
cfg.data.hflip, cfg.data.vflip, cfg.data.rot90 = 0.5, 0.5, 0.5
cfg.model.depth = 50
cfg.model.pretrained = None
cfg.model.backbone_norm = "frozen"
cfg.model.frozen_stages = 1
cfg.model.d_model = 256
cfg.model.enc_layers = 6
cfg.model.dec_layers = 6
cfg.model.num_queries = 500
cfg.model.two_stage = True
cfg.model.box_refine = True
cfg.model.dn_groups = 5
cfg.train.epochs = 50
cfg.train.batch_size = 2
cfg.train.num_workers = 4
cfg.train.amp = "auto"
cfg.optim.lr_drop = 40
cfg.optim.lr = 2e-4
cfg.optim.lr_backbone = 2e-5
cfg.optim.weight_decay = 1e-4
cfg.optim.clip_max_norm = 0.1
cfg.loss.enc_positives = 4
cfg.loss.angle_weight = 2.0
cfg.loss.iou_aware = True
cfg.loss.kld_symmetric = True
cfg.eval.every = 5
cfg.eval.top_k = 1000
cfg.output.dir = "work_dirs/dota_v1_r50"
