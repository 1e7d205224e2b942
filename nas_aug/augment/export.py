"""Exporting a policy: ``policy.json``, a kornia module, an Albumentations pipeline.

* :func:`save_policy` / :func:`load_policy`: the policy as data, written atomically;
* :func:`to_kornia`: a ``kornia.augmentation`` module for batches on the device
  (:mod:`nas_aug.augment.kornia_export` has the op table and where the semantics differ);
* :func:`to_albumentations`: an ``albumentations.Compose`` for CPU dataloaders, and the ops it had
  to leave out (:mod:`nas_aug.augment.albumentations_export` has the op table and tolerances).

>>> import tempfile
>>> from nas_aug.augment import Policy
>>> policy = Policy.preset("autoaugment_imagenet")
>>> with tempfile.TemporaryDirectory() as directory:
...     path = save_policy(policy, directory)
...     load_policy(directory) == policy, path.name
(True, 'policy.json')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_write, json_path, read_tagged_json
from .kornia_export import to_kornia
from .policy import Policy

if TYPE_CHECKING:
    import albumentations

__all__ = ["POLICY_FILE", "POLICY_FORMAT", "load_policy", "save_policy", "to_albumentations",
           "to_kornia"]

POLICY_FILE = "policy.json"
POLICY_FORMAT = "nas_aug.policy/1"


def save_policy(policy: Policy, path: str | os.PathLike) -> Path:
    """Write ``policy`` to ``path`` (a ``.json`` file, or a directory for ``policy.json``).

    The file is written atomically (a temporary file, then a rename); returns its path.
    """
    if not isinstance(policy, Policy):
        raise ValueError(f"expected a Policy, got {type(policy).__name__}: {policy!r}")
    path = json_path(path, POLICY_FILE)
    text = json.dumps({"format": POLICY_FORMAT, **policy.to_json()}, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def load_policy(path: str | os.PathLike) -> Policy:
    """Read the policy :func:`save_policy` wrote (the file, or the directory holding it).

    >>> load_policy("no/such/dir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no policy at 'no/such/dir/policy.json'
    """
    path, data = read_tagged_json(path, POLICY_FILE, POLICY_FORMAT, "policy")
    try:
        return Policy.from_json(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def to_albumentations(policy: Policy, strict: bool = False
                      ) -> tuple[albumentations.Compose, list[str]]:
    """``policy`` as an ``albumentations.Compose``, and the ops with no counterpart it left out.

    See :func:`nas_aug.augment.albumentations_export.to_albumentations`; Albumentations is
    imported on the first call.

    >>> from nas_aug.augment import OpSpec, Policy
    >>> transform, unsupported = to_albumentations(Policy([(OpSpec("rotate", 0.5, 1.0),)]))
    >>> unsupported
    []
    """
    from .albumentations_export import to_albumentations as convert

    return convert(policy, strict=strict)
