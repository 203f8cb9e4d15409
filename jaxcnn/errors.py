"""The base class of every error a user should see as a single line, not a traceback, and the errors that
modules on different sides of the import graph share."""

from __future__ import annotations


class JaxcnnError(Exception):
    """Bad input or a state the user can fix (a spec, data, a run directory, a flag); the message says what to do.

    The ``jaxcnn`` command prints these as one ``error:`` line; any other exception is a bug in jaxcnn.
    """


class DataError(JaxcnnError):
    """A data set or image that cannot be loaded; the message names the file and what to do."""
