"""Evaluation: scores detections and files, never runs a model (that is `rotated_ddetr.inference`).

The DOTA Task1 rotated mAP, equal to the official devkit's (dota_map.py, matching.py, polygon_iou.py), and its
table (report.py).
"""

from rotated_ddetr.evaluation.dota_map import average_precision, eval_dota, load_ground_truth
from rotated_ddetr.evaluation.polygon_iou import devkit_polygon_iou, polygon_iou_pairs
from rotated_ddetr.evaluation.report import format_table

__all__ = [
    "average_precision",
    "devkit_polygon_iou",
    "eval_dota",
    "format_table",
    "load_ground_truth",
    "polygon_iou_pairs",
]
