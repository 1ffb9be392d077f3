"""Benchmarks the compiled ops against their pure-PyTorch twins (and shapely for the IoU).

Prints one table and appends it to benchmarks/RESULTS.md. Usage: python benchmarks/bench_ops.py [--no-record]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_ops_iou_nms  # noqa: E402
import bench_ops_msda  # noqa: E402
from report import append_results, format_table, machine_description  # noqa: E402

from rotated_ddetr.ops import extension_loaded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    if not extension_loaded():
        sys.exit("rotated_ddetr._C is not built: there is no kernel to benchmark (see README, Install)")
    print(f"Machine: {machine_description()}")
    tables = {
        "ms_deform_attn: kernel vs grid_sample twin (forward+backward)": bench_ops_msda.rows(),
        "box_iou_rotated (vs shapely 2) and nms_rotated (vs twin)": bench_ops_iou_nms.rows(),
    }
    for title, rows in tables.items():
        print(f"\n{title}\n{format_table(rows)}")
        if not args.no_record:
            append_results(f"bench_ops.py, {title}", rows)


if __name__ == "__main__":
    main()
