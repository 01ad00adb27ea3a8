"""The error family of ccrop: what bad input or a failing environment raises, as opposed to a bug.

The ``ccrop`` command prints an error of this family as one ``ccrop: error: ...`` line and exits
with code 2; any other exception is a bug and keeps its traceback (exit code 1). The members stay
subclasses of the builtin they replaced (``ValueError``, ``RuntimeError``, ``FileNotFoundError``),
so code that catches those keeps working.

* ``CcropError``: the base; catch it to catch every user error of ccrop.
* ``ConfigError`` (``ValueError``, also ``ccrop.config.ConfigError``): a bad config value, file,
  key or command-line argument.
* ``DataError`` (``ValueError``): a dataset argument (name, split, root, sizes) or data file
  (its format, its contents) that cannot be used.
* ``DataPathError`` (``DataError``, ``FileNotFoundError``): a dataset folder or file given by
  the user that does not exist.
* ``ccrop.data.base.DatasetMissingError`` (``DataError``, ``ConfigError``,
  ``FileNotFoundError``): dataset files missing with download off, or a failed download.
* ``ccrop.data.folder.BadImageError`` (``DataError``): an image file that cannot be decoded.
* ``ccrop.checkpoint.CheckpointError`` (``RuntimeError``): a checkpoint that cannot be read,
  written or does not match the model.

Besides the family, ``ccrop.cli.is_user_error`` reports as one line a box file that cannot be
read or written (``ccrop.box_files.BoxFileError``) and an ``OSError`` of a failing environment
(``is_environment_error``: disk full, quota, read-only file system, no permission, I/O error).
"""

from __future__ import annotations

import errno

__all__ = ["CcropError", "ConfigError", "DataError", "DataPathError", "ENVIRONMENT_ERRNOS",
           "is_environment_error"]


class CcropError(Exception):
    """Base of ccrop's user errors: bad input or a failing environment, never a bug."""


class ConfigError(CcropError, ValueError):
    """A bad configuration value, file or key (the CLI exits with code 2)."""


class DataError(CcropError, ValueError):
    """A dataset argument or data file that cannot be used (the CLI exits with code 2)."""


class DataPathError(DataError, FileNotFoundError):
    """A dataset folder or file given by the user does not exist (the CLI exits with code 2)."""


#: ``OSError`` numbers of a failing environment, not of a bug: disk full, quota exceeded,
#: read-only file system, no permission, an I/O error of the device.
ENVIRONMENT_ERRNOS = frozenset(
    code for code in (getattr(errno, name, None) for name in
                      ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO"))
    if code is not None)


def is_environment_error(err: BaseException) -> bool:
    """True for an ``OSError`` of a failing environment (``ENVIRONMENT_ERRNOS``): disk full,
    quota, read-only file system, no permission or an I/O error where ccrop reads or writes a
    file. A ``PermissionError`` counts without its number too (a DataLoader worker's error is
    raised again in the main process with its type and message only)."""
    return isinstance(err, PermissionError) or (isinstance(err, OSError)
                                                and err.errno in ENVIRONMENT_ERRNOS)
