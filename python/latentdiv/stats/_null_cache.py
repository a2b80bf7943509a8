"""On-disk cache of Monte Carlo null tables (docs/null_cache.md).

A null table depends only on (test, target, n, D, the test's null-relevant options, B, seed) and on
the code that simulates it (the library version), never on the user's data, so a second
``latentdiv check`` of the same shape can read it instead of simulating B null samples again.

Where: ``$LATENTDIV_NULL_CACHE`` when it names a directory, else ``platformdirs.user_cache_dir
("latentdiv")/nulls`` (``$XDG_CACHE_HOME/latentdiv/nulls`` or ``~/.cache/latentdiv/nulls`` without
platformdirs). Off: ``LATENTDIV_NULL_CACHE=0`` (also "off", "false", "no"), ``use_null_cache(False)``,
``normality_report(..., null_cache=False)``, ``latentdiv check --no-cache``.

Safety rules:
- one file per entry, named by the SHA-256 of the canonical key, written to a temporary file in the
  same directory and moved into place with ``os.replace`` (atomic on POSIX and Windows): a reader
  sees a whole old file or a whole new one, never a torn one; two processes filling the same entry
  each write their own temporary file and the last rename wins (both tables are identical: the
  simulation is deterministic for a seed);
- a file is trusted only if it loads with ``allow_pickle=False`` and its stored key, shape, dtype and
  SHA-256 of the table bytes all match; anything else (truncated, corrupted, another key, an old
  format) is a miss, and the table is simulated again and rewritten;
- a failure to read or write the cache directory (read-only, full disk) never fails a test: the
  table is simply not cached on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

ENV_VAR = "LATENTDIV_NULL_CACHE"
FORMAT = 1  # bump when the file layout changes: older files then miss (their stored key differs)
_OFF_VALUES = ("0", "off", "false", "no")

# None: follow the environment; False: off; a path: that directory (use_null_cache sets it).
_override: Union[None, bool, str] = None


def _default_dir() -> Path:
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("latentdiv")) / "nulls"
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "latentdiv" / "nulls"


def cache_dir() -> Optional[Path]:
    """The directory of the on-disk null cache, or None when the cache is off."""
    if _override is False:
        return None
    if isinstance(_override, (str, os.PathLike)):
        return Path(_override)
    env = os.environ.get(ENV_VAR, "").strip()
    if env.lower() in _OFF_VALUES:
        return None
    return Path(env) if env else _default_dir()


@contextlib.contextmanager
def use_null_cache(setting: Union[None, bool, str, os.PathLike]) -> Iterator[None]:
    """Within the block: ``False`` turns the on-disk cache off, a path uses that directory, ``True``
    follows ``$LATENTDIV_NULL_CACHE`` (the default), ``None`` keeps the setting of an enclosing block."""
    global _override
    if not (setting is None or isinstance(setting, (bool, str, os.PathLike))):
        raise TypeError(f"null_cache must be None, a bool or a directory path, got {setting!r}")
    previous = _override
    if setting is not None:
        _override = None if setting is True else (os.fspath(setting) if isinstance(setting, os.PathLike) else setting)
    try:
        yield
    finally:
        _override = previous


def _canonical(full_key: tuple) -> str:
    """A stable text form of the key (JSON of its str/int/float/bool parts, floats by repr so that
    a different beta is a different key), with the format and the library version."""
    from .. import __version__

    def norm(v):
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return repr(float(v))
        if isinstance(v, str):
            return v
        if isinstance(v, tuple):
            return [norm(x) for x in v]
        raise TypeError(f"null cache key parts must be str, int, float or tuples of them, got {v!r}")

    return json.dumps({"format": FORMAT, "version": __version__, "key": norm(full_key)}, sort_keys=True)


def _path_for(directory: Path, canonical: str) -> Path:
    return directory / (hashlib.sha256(canonical.encode()).hexdigest() + ".npz")


def _digest(table: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(table, dtype=np.float64).tobytes()).hexdigest()


def load(full_key: tuple, n_resamples: int) -> Optional[np.ndarray]:  # -> [B, k] float64, read-only
    """The cached table of ``full_key`` (which ends with (B, seed)), or None on a miss or an
    untrustworthy file."""
    directory = cache_dir()
    if directory is None:
        return None
    canonical = _canonical(full_key)
    path = _path_for(directory, canonical)
    try:
        with np.load(path, allow_pickle=False) as f:
            stored_key, stored_digest, table = str(f["key"]), str(f["sha256"]), f["table"]
    except Exception:  # absent, truncated, not a zip, missing members, pickled content: a miss
        return None
    if (stored_key != canonical or table.dtype != np.float64 or table.ndim != 2
            or table.shape[0] != n_resamples or stored_digest != _digest(table)):
        return None
    table = np.ascontiguousarray(table)
    table.setflags(write=False)
    return table


def store(full_key: tuple, table: np.ndarray) -> bool:  # table: [B, k] float64
    """Write the table atomically (temporary file + os.replace); False when the cache is off or the
    directory cannot be written."""
    directory = cache_dir()
    if directory is None:
        return False
    canonical = _canonical(full_key)
    path = _path_for(directory, canonical)
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, table=np.ascontiguousarray(table, dtype=np.float64), key=np.array(canonical),
                     sha256=np.array(_digest(table)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def clear() -> int:
    """Remove every cached table file of the current cache directory; returns how many."""
    directory = cache_dir()
    if directory is None or not directory.is_dir():
        return 0
    removed = 0
    for p in directory.glob("*.npz"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed


def entries() -> int:
    directory = cache_dir()
    if directory is None or not directory.is_dir():
        return 0
    return sum(1 for _ in directory.glob("*.npz"))
