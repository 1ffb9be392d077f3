"""Evaluation: scores detections and files, never runs a model (that is `rotated_ddetr.inference`).

The DOTA Task1 rotated mAP, equal to the official devkit's, at one IoU threshold or several and per object size
(dota_map.py, matching.py, polygon_iou.py, scores.py); its tables (report.py); precision-recall curves and a confusion
matrix as CSV and PNG (confusion.py, plots.py).
"""

from rotated_ddetr.evaluation.dota_map import (
    eval_dota,
    evaluate_matches,
    load_ground_truth,
    match_detections,
    parse_iou_thresholds,
)
from rotated_ddetr.evaluation.matching import Matches
from rotated_ddetr.evaluation.polygon_iou import devkit_polygon_iou, polygon_iou_pairs
from rotated_ddetr.evaluation.report import format_table
from rotated_ddetr.evaluation.scores import SIZE_RANGES, average_precision, precision_recall

__all__ = [
    "SIZE_RANGES",
    "Matches",
    "average_precision",
    "devkit_polygon_iou",
    "eval_dota",
    "evaluate_matches",
    "format_table",
    "load_ground_truth",
    "match_detections",
    "parse_iou_thresholds",
    "polygon_iou_pairs",
    "precision_recall",
]
