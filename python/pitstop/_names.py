"""Names that become directory names: feature groups, views, models."""

from __future__ import annotations

import re

from .errors import InvalidArgumentError

_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_name(name: object, what: str) -> str:
    """Returns ``name`` if it is safe as a directory name, else raises."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise InvalidArgumentError(
            f"{what} name {name!r} is not allowed; use 1-128 characters from "
            "[A-Za-z0-9_-] (it becomes a directory name: no '/', '..' or spaces)"
        )
    return name


MAX_VERSION = 2**31 - 1


def check_version(version: object, what: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidArgumentError(
            f"{what} version must be an integer from 1 to {MAX_VERSION}; got {version!r}")
    return version
