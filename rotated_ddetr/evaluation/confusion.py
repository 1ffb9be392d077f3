"""Confusion matrix of detections against ground truth across classes: `Matches` in, (C+1, C+1) counts out (the last
row and column are "background"). Written as CSV and PNG by `plots`.

Definition (class-agnostic overlap, unlike the per-class matching of the mAP): only detections with score >=
`score_threshold` take part, and an overlap counts when the polygon IoU > `iou_threshold` (strictly, as the mAP's).
- Each non-difficult object of true class i adds 1 to row i, column j: the class of the detection (of any class) that
  overlaps it most; column "background" when no detection overlaps it (a miss). IoU ties go to the higher score.
- Each detection of class j that overlaps no object at all (difficult ones included) adds 1 to row "background",
  column j (a detection on background).
- A detection that overlaps some object without being any object's best (a duplicate) and objects with
  difficult != 0 are not counted. So row sums are the non-difficult objects, and [background, background] is 0.
IoUs are the vectorised `polygon_iou_pairs` values (within 1e-9 of the devkit's; degenerate polygons count as 0).
"""

from __future__ import annotations

import numpy as np

from rotated_ddetr.evaluation.matching import Matches, PolygonStats, candidate_pairs
from rotated_ddetr.evaluation.polygon_iou import polygon_iou_pairs


def confusion_matrix(m: Matches, iou_threshold: float = 0.5, score_threshold: float = 0.25) -> np.ndarray:
    """Counts of (true class, predicted class) as this module defines them.

    Args:
        m: the matches (only their ground truth and detections are used).
        iou_threshold: the IoU an overlap must exceed, in [0, 1).
        score_threshold: detections scoring below it are left out (0.25 is Ultralytics' default for this plot).

    Returns:
        (C+1, C+1) int64: rows are the true classes of `m.classes` then background, columns the predicted ones.
    """
    n = len(m.classes)
    keep = np.nonzero(m.dets["scores"] >= score_threshold)[0]
    det_cls, det_img, scores = m.dets["cls"][keep], m.dets["img"][keep], m.dets["scores"][keep]
    det_stats = PolygonStats(*(field[keep] for field in m.det_stats))
    di, gi = candidate_pairs(m.gt_stats, m.gt["img"], det_stats, det_img)  # every class against every class
    iou = np.nan_to_num(polygon_iou_pairs(m.gt["polygons"][gi], m.dets["polygons"][keep[di]])[0], nan=0.0)
    over = iou > iou_threshold
    di, gi, iou = di[over], gi[over], iou[over]
    order = np.lexsort((di, -scores[di], -iou, gi))  # per object: highest IoU first, then highest score
    first = order[np.unique(gi[order], return_index=True)[1]]
    best = np.full(len(m.gt["cls"]), n, dtype=np.int64)  # predicted class per object; n = background (missed)
    best[gi[first]] = det_cls[di[first]]
    matrix = np.zeros((n + 1, n + 1), dtype=np.int64)
    easy = ~m.gt["difficult"]
    np.add.at(matrix, (m.gt["cls"][easy], best[easy]), 1)
    lonely = np.ones(len(keep), dtype=bool)
    lonely[di] = False
    matrix[n, :n] += np.bincount(det_cls[lonely], minlength=n)
    return matrix
