"""Atomic writes: a result the user produced is never left half written.

- :func:`atomic_writer` / :func:`atomic_write_text` / :func:`atomic_write_json`: one file,
  written beside its destination and renamed into place (results, reports, checkpoints
  through ``utils/checkpoint_io.py``, frozen alpha);
- :func:`build_folder_atomically`: a whole generated folder (the synthetic datasets),
  built beside its destination and renamed into place, skipped when it is already there
  with the same parameters;
- :func:`file_sha256` (what a written file records of its input: a checkpoint, a weights
  file), :func:`read_json` and :func:`no_gc` (the large JSON files' readers).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PARAMS_FILE = "params.json"
MARKER_FILE = ".complete"


@contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file 0600; give it the permissions a plain open() would
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Strict JSON: a NaN or infinite float (an ECE without detections, an mAP without
    ground truth) is written as ``null``, which every JSON reader takes."""
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:  # rare: convert only then (results.json can hold millions of floats)
        text = json.dumps(_finite(obj), indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):  # numpy's float64 too
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build_prefix(root: Path) -> str:
    """The temporary folder of a build is named after its host and process: on a shared
    file system, another node's build in progress is not this host's to judge."""
    return f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _remove_stale_builds(root: Path) -> None:
    """Temporary folders of this host's builds whose process is gone (a killed run) are
    removed."""
    host = socket.gethostname()
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        # mkdtemp's random suffix has no "-"; host names may
        parts = tmp.name.split(".tmp-", 1)[1].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def is_complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished build with exactly these parameters."""
    try:
        found = json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (root / MARKER_FILE).exists() and found == json.loads(json.dumps(params, sort_keys=True))


def build_folder_atomically(
    root: str | os.PathLike, params: dict, build: Callable[[Path], None]
) -> Path:
    """Make ``root`` hold what ``build(tmp_dir)`` writes for ``params``, unless it already does.

    Building happens in a temporary sibling folder (named after this process) that is
    renamed into place after ``params.json`` and the completion marker are written, so an
    interrupted build never leaves a folder that looks complete; the next build removes
    the leftovers of builds whose process is gone. An existing ``root`` is replaced only
    if it is empty or was written by this function (it holds ``params.json``). The folder
    gets the permissions a plain ``mkdir`` would give (the umask's).
    """
    root = Path(root)
    if is_complete(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not (root / PARAMS_FILE).exists():
        raise FileExistsError(
            f"{root} exists and is not a generated dataset (no {PARAMS_FILE}); "
            "refusing to overwrite it: choose an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=_build_prefix(root), dir=root.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        build(tmp)
        (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True))
        (tmp / MARKER_FILE).write_text("complete\n")
        if root.exists():
            if is_complete(root, params):  # another process finished first
                return root
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / "data")
            shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:
            if not is_complete(root, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def no_gc() -> Iterator[None]:
    """The garbage collector off while a large JSON file is parsed: the parsed file holds
    no reference cycles, and collecting while its millions of small objects are made
    costs about as much as the parsing itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """A JSON file's content; ``error`` (the caller's, worded for the user) naming the file
    when it cannot be read or is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON: {err}") from err
