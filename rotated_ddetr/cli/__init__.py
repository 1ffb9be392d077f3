"""The installed command `rotated-ddetr SUBCOMMAND ...` (also `python -m rotated_ddetr SUBCOMMAND ...`).

One module per subcommand, each with `parse_args(argv, prog)` and `main(argv, prog) -> exit status`; `main.py`
dispatches and imports only the subcommand asked for. `tools/*.py` in the repository are thin wrappers of the same
`main`s, kept for checkouts and torchrun scripts.
"""
