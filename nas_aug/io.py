"""Files nas_aug writes and reads: atomic writes, sets of files written as one transaction
(with a manifest of their hashes, checked when they are read back), and JSON files tagged
with their format.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "a.json"
>>> atomic_write(path, lambda tmp: tmp.write_text('{"format": "demo/1", "x": 1}'))
>>> read_tagged_json(path, "a.json", "demo/1", "demo")[1]
{'x': 1}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any


def _umask_file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _umask_file_mode()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp.", suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give the usual umask mode
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "nas_aug.manifest/1"
_STAGING_PREFIX = ".nas_aug-staging-"  # a set being written: not yet part of the folder
_COMMIT_DIR = ".nas_aug-commit"  # a set written whole, being moved into the folder


def write_file_set(directory: str | os.PathLike, write: Callable[[Path], None],
                   owned: Collection[str], overwrite: bool = False, what: str = "export"
                   ) -> list[str]:
    """Write the files ``write(folder)`` puts into an empty folder as one set into
    ``directory``: after a crash at any point, ``directory`` holds the old set or the new
    one, whole (a set moved only part-way is finished by the next reader or writer).

    ``owned`` are the names such a set may hold. A folder holding any of them is refused
    unless ``overwrite`` (:func:`refuse_held`); with it, the new files replace the old, and a
    file of the previous set that the new one lacks is removed. No other file is touched.
    ``manifest.json`` lists the new files with their hashes (:func:`check_unchanged` compares
    them). Returns the names written.

    >>> folder = Path(tempfile.mkdtemp())
    >>> write_file_set(folder, lambda tmp: (tmp / "a.txt").write_text("1"), owned=["a.txt"])
    ['a.txt']
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'manifest.json']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    refuse_held(directory, owned, overwrite, what)
    _remove_strays(directory, owned)
    previous = _manifest(directory)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=_STAGING_PREFIX))
    try:
        write(staging)
        written = sorted(path.name for path in staging.iterdir())
        unowned = sorted(set(written) - set(owned))
        if unowned:
            raise RuntimeError(f"{what} wrote {unowned}, which are not among its files {owned}")
        for name in written:
            os.chmod(staging / name, _FILE_MODE)
        stale = sorted(set(previous) - set(written))
        write_json(staging / MANIFEST_FILE, {
            "format": MANIFEST_FORMAT, "files": {name: _digest(staging / name)
                                                 for name in written}, "remove": stale})
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.rename(staging, directory / _COMMIT_DIR)  # the set is written whole: the new one
    finish_pending(directory)
    return written


def refuse_held(directory: str | os.PathLike, owned: Collection[str], overwrite: bool = False,
                what: str = "export") -> None:
    """Refuse ``directory`` if it holds one of the files ``owned`` (or a manifest), unless
    ``overwrite``: a ``what`` written there would replace them."""
    directory = Path(directory)
    finish_pending(directory)
    held = sorted(name for name in {*owned, MANIFEST_FILE} if (directory / name).is_file())
    if held and not overwrite:
        raise FileExistsError(
            f"{what} directory {str(directory)!r} already holds a result ({', '.join(held)}); "
            "choose another directory or pass overwrite=True to replace it")


def finish_pending(directory: str | os.PathLike) -> None:
    """Finish moving a set that :func:`write_file_set` wrote whole into ``directory``."""
    directory = Path(directory)
    pending = directory / _COMMIT_DIR
    if not pending.is_dir():
        return
    try:
        manifest = json.loads((pending / MANIFEST_FILE).read_text())
        for name in manifest["files"]:
            if (pending / name).exists():
                os.replace(pending / name, directory / name)
        for name in manifest["remove"]:
            (directory / name).unlink(missing_ok=True)
        os.replace(pending / MANIFEST_FILE, directory / MANIFEST_FILE)
        os.rmdir(pending)
    except FileNotFoundError:  # the manifest was moved last: only the empty folder is left
        shutil.rmtree(pending)
    except PermissionError as err:
        raise PermissionError(f"the files in {str(directory)!r} were written whole but not all "
                              f"moved into place, and this process may not finish it: {err}"
                              ) from None


def check_unchanged(path: str | os.PathLike) -> None:
    """Refuse ``path`` if the manifest of its folder lists it with other contents (a file
    changed, truncated or copied in after the set was written). Files no manifest lists pass.
    """
    path = Path(path)
    finish_pending(path.parent)
    expected = _manifest(path.parent).get(path.name)
    if expected is not None and path.exists() and _digest(path) != expected:
        raise ValueError(
            f"{path} is not the file written with the others in {str(path.parent)!r} (its "
            f"size or sha256 differs from {MANIFEST_FILE}'s): it was changed, truncated or "
            f"copied in afterwards. Export again, or delete {path.parent / MANIFEST_FILE} to "
            "read the files as they are")


def add_to_manifest(path: str | os.PathLike) -> None:
    """List ``path``, written beside a set, in its folder's manifest (if there is one), so
    that the next set written there removes it with the rest."""
    path = Path(path)
    manifest_path = path.parent / MANIFEST_FILE
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][path.name] = _digest(path)
    write_json(manifest_path, manifest)


def _manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """The files the manifest in ``directory`` lists, with their digests (none without one)."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        return {}
    manifest = read_json(path, f"the file manifest of {str(directory)!r}")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} file; delete it to read the files "
                         f"of {str(directory)!r} unchecked")
    return manifest["files"]


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def _remove_strays(directory: Path, owned: Collection[str]) -> None:
    """Remove what a killed writer left: unfinished sets and temporary files of ``owned``."""
    for path in directory.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    for name in owned:
        stem, suffix = Path(name).stem, Path(name).suffix
        for path in directory.glob(f".{stem}.tmp.*{suffix}"):
            path.unlink(missing_ok=True)


def json_path(path: str | os.PathLike, filename: str) -> Path:
    """``path`` itself if it names a ``.json`` file, else ``path / filename``."""
    path = Path(path)
    return path / filename if path.is_dir() or path.suffix != ".json" else path


def read_tagged_json(path: str | os.PathLike, filename: str, fmt: str, what: str
                     ) -> tuple[Path, dict[str, Any]]:
    """The file and its data (without the ``format`` tag) of a JSON file nas_aug wrote as
    ``fmt``; ``path`` is the file or the directory holding ``filename``."""
    path = json_path(path, filename)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {str(path)!r}")
    data = read_json(path, what)
    found = data.pop("format", None) if isinstance(data, dict) else type(data).__name__
    if found != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format {found!r}); nas_aug writes it "
                         f"with the key 'format': {fmt!r}")
    return path, data


def read_json(path: Path, what: str) -> Any:
    """The data of the JSON file ``path`` (a ``what``); a file that is not JSON is named with
    the place it breaks."""
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise IsADirectoryError(f"{what}: {str(path)!r} is a directory, not a JSON file"
                                ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a text file ({what}): {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        truncated = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
        ending = "; the file ends there: truncated?" if truncated else ""
        raise ValueError(f"{path} is not valid JSON ({what}): {err.msg} (line {err.lineno} "
                         f"column {err.colno}{ending})") from None


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path``, atomically."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
