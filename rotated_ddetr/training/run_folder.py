"""The run folder (`output.dir`) of a training run: claimed by one run at a time, kept from overwriting another run.

`claim_run_folder` is the first thing a run does: it checks that the folder is writable, takes its lock
(`.lock`: the owner's pid and host; a lock left by a killed run is stale and taken over), refuses a folder that holds
another run's checkpoints or log unless the run resumes or overwrites, and removes the temporary files a run killed
while saving left behind. The training loop holds the lock until it ends.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rotated_ddetr.fileio import FileLock, LockedError, check_writable_folder, remove_stale_temporaries

LOCK_NAME = ".lock"
RUN_FILES = ("log.jsonl", "config.json")  # with checkpoint_*.pth and tensorboard/: what a run writes


class RunFolderError(ValueError):
    """The run folder is in use by another run, or holds another run's files; the message says what to do."""


def claim_run_folder(folder: str | os.PathLike, resuming: bool, overwrite: bool) -> FileLock:
    """Takes the run folder for this run (see the module docstring).

    Args:
        folder: `output.dir` (created when missing).
        resuming: the run continues from a checkpoint (`--resume`): the folder's files are its own.
        overwrite: delete another run's checkpoints, log, config and TensorBoard files found there.

    Returns:
        The held lock; release it when the run ends.

    Raises:
        RunFolderError: another live run holds the folder, or it holds another run's files (neither resuming nor
            overwriting). OSError: the folder cannot be created or written.
    """
    folder = check_writable_folder(folder)
    try:
        lock = FileLock(folder / LOCK_NAME)
    except LockedError as error:
        raise RunFolderError(
            f"{folder} is in use by another training run ({error}); two runs in one folder would interleave their "
            "logs and overwrite each other's checkpoints: choose another output.dir"
        ) from None
    try:
        found = _run_files(folder)
        if found and not resuming:
            if not overwrite:
                names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
                raise RunFolderError(
                    f"{folder} holds the files of an earlier run ({names}): continue it with --resume "
                    f"{folder / 'checkpoint_last.pth'}, choose another output.dir, or replace it with --overwrite"
                )
            for path in found:
                path.unlink(missing_ok=True)
            shutil.rmtree(folder / "tensorboard", ignore_errors=True)
        remove_stale_temporaries(folder)
    except BaseException:
        lock.release()
        raise
    return lock


def _run_files(folder: Path) -> list[Path]:
    """The files of a run in `folder`: checkpoints, log and config (an empty log is none: its run never started)."""
    files = [folder / name for name in RUN_FILES]
    return sorted(folder.glob("checkpoint_*.pth")) + [p for p in files if p.is_file() and p.stat().st_size > 0]
