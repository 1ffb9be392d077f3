"""Presentation of an `eval_dota` result: per-class AP tables and mAP lines, as printed by the evaluation tools."""


def _shown(result: dict) -> list[str]:
    """Classes with ground truth or detections in the evaluated images."""
    return [name for name, n in result["num_gt"].items() if n or result["num_dets"][name]]


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(result: dict) -> str:
    """Per-class rows (class, AP, non-difficult ground truth, detections), then the mAP line.

    Classes with neither ground truth nor detections in the evaluated images are left out; "-" marks a class with
    detections but no ground truth (not part of the mAP).

    Args:
        result: the dict returned by `rotated_ddetr.evaluation.eval_dota` for one threshold.
    """
    names = _shown(result)
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


def format_thresholds_table(result: dict) -> str:
    """Per-class AP at each IoU threshold (one column each) and their mean, an mAP row, then the summary line
    (mAP over thresholds, mAP50 and mAP75 when evaluated).

    Args:
        result: the dict returned by `eval_dota` for a sequence of thresholds.
    """
    keys, names = list(result["mAP_by_iou"]), _shown(result)
    width = max(len("class"), *(len(name) for name in names))
    cols = max(7, *(len(key) for key in keys))
    lines = [f"{'class':<{width}}  " + "  ".join(f"{key:>{cols}}" for key in keys) + f"  {'mean':>7}  {'gt':>7}"]
    for name in names:
        aps = [result["by_iou"][key]["AP"].get(name) for key in keys]
        row = "  ".join(f"{_ap(ap):>{cols}}" for ap in aps) + f"  {_ap(result['AP'].get(name)):>7}"
        lines.append(f"{name:<{width}}  {row}  {result['num_gt'][name]:>7}")
    lines.append(f"{'mAP':<{width}}  " + "  ".join(f"{_ap(m):>{cols}}" for m in result["mAP_by_iou"].values()))
    span = f"{keys[0]}:{keys[-1]}" if len(keys) > 1 else keys[0]
    extra = "".join(f"; {name} {result[name]:.4f}" for name in ("mAP50", "mAP75") if name in result)
    lines.append(
        f"mAP ({result['metric']}, IoU > {span}, {len(keys)} thresholds, {len(result['AP'])} classes): "
        f"{result['mAP']:.4f}{extra}"
    )
    return "\n".join(lines)


def format_sizes_table(result: dict) -> str:
    """Per-class AP by object size (COCO's small / medium / large) with the counted objects, then the mAP line.

    Args:
        result: an `eval_dota` result computed with sizes=True (one threshold or several: then means over them).
    """
    sizes, names = result["sizes"], _shown(result)
    width = max(len("class"), *(len(name) for name in names))
    head = "  ".join(f"{'AP ' + s:>9}" for s in sizes) + "  " + "  ".join(f"{'gt ' + s:>9}" for s in sizes)
    lines = [f"{'class':<{width}}  {head}"]
    for name in names:
        aps = "  ".join(f"{_ap(size['AP'].get(name)):>9}" for size in sizes.values())
        counts = "  ".join(f"{size['num_gt'][name]:>9}" for size in sizes.values())
        lines.append(f"{name:<{width}}  {aps}  {counts}")
    bounds = ", ".join(
        f"{s} {lo:g}-{hi:g}" if hi is not None else f"{s} >= {lo:g}" for s, (lo, hi) in
        ((s, size["range_px"]) for s, size in sizes.items())
    )  # fmt: skip
    maps = ", ".join(f"{s} {_ap(size['mAP'])}" for s, size in sizes.items())
    lines.append(f"mAP by object size (sqrt of polygon area, px: {bounds}): {maps}")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """`format_table` for one threshold or `format_thresholds_table` for several, then `format_sizes_table` when the
    result has sizes."""
    text = format_thresholds_table(result) if "mAP_by_iou" in result else format_table(result)
    return text + ("\n\n" + format_sizes_table(result) if "sizes" in result else "")
