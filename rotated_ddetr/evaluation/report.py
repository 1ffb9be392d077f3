"""Presentation of an `eval_dota` result: per-class AP table and mAP line, as printed by the evaluation tools."""


def format_table(result: dict) -> str:
    """Per-class rows (class, AP, non-difficult ground truth, detections), then the mAP line.

    Classes with neither ground truth nor detections in the evaluated images are left out; "-" marks a class with
    detections but no ground truth (not part of the mAP).

    Args:
        result: the dict returned by `rotated_ddetr.evaluation.eval_dota`.
    """
    names = [name for name, n in result["num_gt"].items() if n or result["num_dets"][name]]
    width = max(len("class"), *(len(name) for name in names))
    lines = [f"{'class':<{width}}  {'AP':>7}  {'gt':>7}  {'dets':>7}"]
    for name in names:
        num_gt = result["num_gt"][name]
        ap = f"{result['AP'][name]:.4f}" if name in result["AP"] else "-"
        lines.append(f"{name:<{width}}  {ap:>7}  {num_gt:>7}  {result['num_dets'][name]:>7}")
    lines.append(
        f"mAP ({result['metric']}, IoU > {result['iou_thr']:g}, {len(result['AP'])} classes): {result['mAP']:.4f}"
    )
    return "\n".join(lines)
