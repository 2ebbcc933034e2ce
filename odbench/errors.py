"""The one base of the errors a user must fix.

Every user-facing error of odbench derives from :class:`OdbenchError`; its message is one line
that names the file or option and the fix.  The ``odbench`` command line catches it once (in
:mod:`odbench.cli`) and prints ``error: <message>``, exit code 2; anything else is a bug and keeps
its traceback.  Library callers catch ``OdbenchError`` (or a subclass) the same way.

This module imports nothing, so every module may import it.
"""

from __future__ import annotations


class OdbenchError(Exception):
    """An error the user must fix (bad option, unusable file); the message is one line."""


class UserError(OdbenchError):
    """A command's own refusal of its options or inputs; one line."""
