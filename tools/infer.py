"""`python tools/infer.py ...` = `rotated-ddetr infer ...`: for checkouts and torchrun scripts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rotated_ddetr.cli.infer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
