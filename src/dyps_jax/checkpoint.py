"""Atomic saving of run files and Orbax checkpoints of the whole TrainState.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
never leaves a half-written checkpoint behind; `write_atomic` does the same for small text files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def write_atomic(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def manager(directory: str | Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    mngr.save(step, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def restore(directory: str | Path, like: Any, step: int | None = None) -> Any:
    """Restores a checkpoint into the structure of `like` (a state or `jax.eval_shape` of one).

    Raises ValueError naming the directory when there is no checkpoint or it cannot be read.
    """
    directory = Path(directory).absolute()
    mngr = manager(directory)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise ValueError(f"checkpoint: no checkpoint found in {directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax raises many types for unreadable or mismatched files
        raise ValueError(
            f"checkpoint: cannot restore step {step} from {directory}: {type(err).__name__}: {err}"
        ) from None
