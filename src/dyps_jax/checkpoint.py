"""Atomic saving of run files and verified Orbax checkpoints of the whole TrainState.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
never leaves a half-written checkpoint behind; `write_atomic` does the same for small text files.
A sha256 of each checkpoint's files is saved beside it and checked before restoring, so a
checkpoint damaged later (a garbled or truncated file) is refused instead of restored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
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


def json_safe(data: Any) -> Any:
    """`data` with non-finite floats as None and numpy scalars/arrays as Python values, so the
    JSON written is valid (`json` would otherwise write bare NaN/Infinity tokens)."""
    if isinstance(data, dict):
        return {str(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    if isinstance(data, np.ndarray | np.generic):
        return json_safe(data.tolist())
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted or does not fit the training state."""


def manager(directory: str | Path, max_to_keep: int = 2, create: bool = True
            ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _digest(step_dir: Path) -> str:
    """sha256 over the relative names and bytes of every file of one checkpoint."""
    h = hashlib.sha256()
    for file in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(step_dir)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _checksum_file(mngr: ocp.CheckpointManager, step: int) -> Path:
    return Path(mngr.directory) / f"{step}.sha256"


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves `state` as checkpoint `step`, then its checksum beside it (`<step>.sha256`); drops
    the checksums of checkpoints Orbax has deleted (it keeps the last `max_to_keep`)."""
    mngr.save(step, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    directory = Path(mngr.directory)
    write_atomic(_checksum_file(mngr, step), _digest(directory / str(step)) + "\n")
    kept = set(mngr.all_steps())
    for file in directory.glob("*.sha256"):
        if file.stem.isdigit() and int(file.stem) not in kept:
            file.unlink()


def _restore_step(mngr: ocp.CheckpointManager, step: int, abstract: Any,
                  warn: Callable[[str], None] | None) -> Any:
    where = f"step {step} from {Path(mngr.directory) / str(step)}"
    checksum = _checksum_file(mngr, step)
    if not checksum.is_file():
        # Saved by an older dyps-jax, or stopped between Orbax's commit and the checksum: Orbax's
        # atomic rename still guarantees a complete checkpoint, but it cannot be verified.
        if warn is not None:
            warn(f"checkpoint {where} has no checksum ({checksum.name}); restoring it unverified")
    elif checksum.read_text().strip() != _digest(Path(mngr.directory) / str(step)):
        raise CheckpointError(f"checkpoint: cannot restore {where}: checksum mismatch (its files "
                              f"changed after saving: corrupted or truncated)")
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax raises many types for unreadable or mismatched files
        raise CheckpointError(
            f"checkpoint: cannot restore {where}: {type(err).__name__}: {err}"
        ) from None


def restore(directory: str | Path, like: Any, step: int | None = None, fallback: bool = False,
            warn: Callable[[str], None] | None = None) -> Any:
    """Restores a verified checkpoint into the structure of `like` (a state or `jax.eval_shape`
    of one): the latest, or `step`.

    Every checkpoint's files are checked against the checksum saved beside it before they are
    read. A corrupted or unreadable checkpoint raises `CheckpointError` (a ValueError) naming it;
    with `fallback=True` the previous checkpoints are tried instead, newest first, and `warn` is
    told about each one skipped. A checkpoint without a checksum (saved by an older dyps-jax) is
    restored unverified, and `warn` is told.
    """
    directory = Path(directory).absolute()
    steps = sorted(manager(directory, create=False).all_steps()) if directory.is_dir() else []
    if step is not None:
        steps = [s for s in steps if s <= step] if fallback else [s for s in steps if s == step]
    if not steps:
        raise CheckpointError(f"checkpoint: no checkpoint found in {directory}")
    mngr = manager(directory, create=False)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors = []
    for candidate in reversed(steps):
        try:
            return _restore_step(mngr, candidate, abstract, warn)
        except CheckpointError as err:
            if not fallback:
                raise
            errors.append(str(err))
            if warn is not None:
                warn(f"{err}; trying an earlier checkpoint")
    raise CheckpointError("checkpoint: no readable checkpoint in "
                          f"{directory}: " + "; ".join(errors))
