"""Files nas_aug writes and reads: atomic writes, and JSON files tagged with their format.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "a.json"
>>> atomic_write(path, lambda tmp: tmp.write_text('{"format": "demo/1", "x": 1}'))
>>> read_tagged_json(path, "a.json", "demo/1", "demo")[1]
{'x': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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
    data = json.loads(path.read_text())
    found = data.pop("format", None) if isinstance(data, dict) else type(data).__name__
    if found != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format {found!r}); nas_aug writes it "
                         f"with the key 'format': {fmt!r}")
    return path, data


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path``, atomically."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
