"""predict_folder through a Predictor equals the model called directly on the folder's images (uint8 pixels resized
by the input scale, batches padded to the size divisor, postprocess, boxes in original pixels): exactly, on the CPU.
Predictor.from_config is the one reader of the config's evaluation settings; autocast follows train.amp."""

import cv2
import numpy as np
import pytest
import torch

from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.config import Config
from rotated_ddetr.data.batching import pad_images
from rotated_ddetr.data.dataset import DotaImages, image_files
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES, write_dataset
from rotated_ddetr.data.transforms import resize_image
from rotated_ddetr.images import read_image
from rotated_ddetr.inference import Predictor, postprocess, predict_folder
from rotated_ddetr.model import build_model
from tests.small_model import small_test_model_config

SIZES = [(160, 120), (96, 160), (160, 160)]  # (h, w): batches of 2 are padded


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 synthetic images cropped to SIZES (labels as written; they are not read here)."""
    root = tmp_path_factory.mktemp("folder")
    write_dataset(root, 3, size=160, seed=3, progress=False)
    for path, (h, w) in zip(image_files(root), SIZES, strict=True):
        cv2.imwrite(str(path), cv2.imread(str(path))[:h, :w])
    return root


@pytest.fixture(scope="module")
def cfg():
    cfg = Config()
    cfg.model = small_test_model_config(len(SYNTHETIC_CLASSES))
    cfg.data.classes, cfg.data.scale = SYNTHETIC_CLASSES, 0.75
    cfg.eval.top_k, cfg.eval.score_threshold, cfg.eval.nms_iou = 40, 0.0, 0.5
    return cfg


def _direct(model, root, scale, batch_size, top_k, score_threshold, nms_iou):
    """The model called on the folder's images as the training-time evaluation did before it went through Predictor
    (rotated_ddetr/evaluation/model_eval.py): {class index: [(image, scores, polygons)]}."""
    files, out = image_files(root), {}
    for start in range(0, len(files), batch_size):
        images = [torch.from_numpy(read_image(path)).permute(2, 0, 1) for path in files[start : start + batch_size]]
        sizes = torch.tensor([tuple(image.shape[-2:]) for image in images])
        resized = [resize_image(image, scale).float().div_(255.0) for image in images]
        batch, masks = pad_images(resized, model.size_divisor)
        with torch.no_grad():
            detections = postprocess(model(batch, masks), sizes, top_k, score_threshold, nms_iou)
        for path, dets in zip(files[start : start + batch_size], detections, strict=True):
            polygons = rboxes_to_polygons(dets.rboxes.double()).numpy()
            for c in np.unique(dets.labels.numpy()).tolist():
                keep = (dets.labels == c).numpy()
                out.setdefault(c, []).append((path.stem, dets.scores.double().numpy()[keep], polygons[keep]))
    return out


def test_predict_folder_equals_a_direct_model_call(folder, cfg):
    torch.manual_seed(0)
    model = build_model(cfg.model)
    predictor = Predictor.from_config(model, cfg)
    got = predict_folder(predictor, folder, batch_size=2, num_workers=1)
    assert not model.training  # the predictor runs the model in eval mode
    expected = _direct(model, folder, 0.75, 2, 40, 0.0, 0.5)
    assert list(got) == list(SYNTHETIC_CLASSES)
    assert sum(len(d) for d in got.values()) > 50  # not vacuous: random weights still give many candidates
    for c, name in enumerate(SYNTHETIC_CLASSES):
        parts = expected.get(c, [])
        assert got[name].image_names == [image for image, scores, _ in parts for _ in scores]
        # Tolerance 0: the same operations on the same pixels in the same batches.
        np.testing.assert_array_equal(got[name].scores, np.concatenate([s for _, s, _ in parts] or [np.zeros(0)]))
        np.testing.assert_array_equal(
            got[name].polygons, np.concatenate([p for _, _, p in parts] or [np.zeros((0, 8))])
        )


def test_from_config_reads_the_evaluation_settings_and_the_training_autocast(cfg):
    model = build_model(cfg.model)
    predictor = Predictor.from_config(model, cfg)
    assert (predictor.top_k, predictor.score_threshold, predictor.nms_iou) == (40, 0.0, 0.5)
    assert (predictor.scale, predictor.classes, predictor.amp) == (0.75, SYNTHETIC_CLASSES, "none")
    assert predictor.device == torch.device("cpu")
    cfg = Config.from_dict(cfg.to_dict())
    cfg.train.amp = "bf16"
    assert Predictor.from_config(model, cfg).amp == "bf16"  # the periodic evaluation runs as the training does
    override = Predictor.from_config(model, cfg, classes=("a",) * 6, amp="none", top_k=7, score_threshold=0.2)
    assert (override.classes, override.amp, override.top_k, override.score_threshold) == (("a",) * 6, "none", 7, 0.2)


def test_dota_images_are_the_decoded_pixels(folder):
    images = DotaImages(folder)
    assert len(images) == 3
    for index, (h, w) in enumerate(SIZES):
        image, name = images[index]
        assert name == f"synth_{index:05d}" and image.shape == (h, w, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, read_image(image_files(folder)[index]))
