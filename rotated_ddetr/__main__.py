"""`python -m rotated_ddetr SUBCOMMAND ...`: the same as the installed `rotated-ddetr` command."""

import sys

from rotated_ddetr.cli.main import main

sys.exit(main())
