"""The error family of ccrop: what bad input or a failing environment raises, as opposed to a bug.

The ``ccrop`` command prints a member as one ``ccrop: error: ...`` line and exits with code 2;
any other exception is a bug and keeps its traceback. Members stay subclasses of the builtin
they replaced, so code catching those keeps working: ``ConfigError`` and ``DataError``
(``ValueError``), ``DataPathError`` (also ``FileNotFoundError``), and elsewhere
``ccrop.data.base.DatasetMissingError``, ``ccrop.data.folder.BadImageError`` and
``ccrop.checkpoint.CheckpointError`` (``RuntimeError``). ``ccrop.cli.is_user_error`` also
counts ``is_environment_error``.
"""

from __future__ import annotations

import errno

__all__ = ["BoxFileError", "CcropError", "ConfigError", "DataError", "DataPathError",
           "ENVIRONMENT_ERRNOS", "is_environment_error"]


class CcropError(Exception):
    """Base of ccrop's user errors: bad input or a failing environment, never a bug."""


class ConfigError(CcropError, ValueError):
    """A bad configuration value, file, key or command-line argument."""


class DataError(CcropError, ValueError):
    """A dataset argument (name, split, root, sizes) or data file that cannot be used."""


class DataPathError(DataError, FileNotFoundError):
    """A dataset folder or file given by the user does not exist."""


class BoxFileError(DataError):
    """A box file (``ccrop.box_files``) that cannot be read or written; names file and row."""


#: ``OSError`` numbers of a failing environment, not of a bug: disk full, quota exceeded,
#: read-only file system, no permission, an I/O error of the device.
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in
                               ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO")
                               if hasattr(errno, name))


def is_environment_error(err: BaseException) -> bool:
    """True for an ``OSError`` of a failing environment (``ENVIRONMENT_ERRNOS``); a
    ``PermissionError`` counts without its number too (a DataLoader worker's error comes back
    with its type and message only)."""
    return isinstance(err, PermissionError) or (isinstance(err, OSError)
                                                and err.errno in ENVIRONMENT_ERRNOS)
