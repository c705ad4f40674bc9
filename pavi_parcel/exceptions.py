"""Typed errors shared by every stage.

Every error a user can fix is a :class:`BadInputError` built from the one template the
project uses everywhere: what went wrong, what was expected, what was received, how to
fix it. The command line turns these into a single line on stderr and exit code 2;
anything else is an internal error (exit code 1).
"""

from __future__ import annotations


class PaviParcelError(Exception):
    """Base class of every error raised on purpose by pavi-parcel."""


class BadInputError(PaviParcelError, ValueError):
    """An input, option or output folder the user can fix (a ``ValueError``, for Python callers).

    Parameters
    ----------
    what : str
        What went wrong, naming the file, participant or option involved.
    expected : str
        What the tool expected to find.
    got : str
        What it found instead.
    fix : str
        One concrete action that fixes it.

    Examples
    --------
    >>> print(BadInputError("No BOLD runs found for participant '07' in /data/ds",
    ...                     "files named *_space-fsaverage5_bold.func.gii", "none", "check data.space"))
    No BOLD runs found for participant '07' in /data/ds: expected files named \
    *_space-fsaverage5_bold.func.gii, got none. Fix: check data.space.
    """

    def __init__(self, what: str, expected: str, got: str, fix: str):
        self.what, self.expected, self.got, self.fix = what, expected, got, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-line message shown to the user."""
        fix = self.fix.rstrip(".")
        return f"{self.what}: expected {self.expected}, got {self.got}. Fix: {fix}."


class BadInputErrors(BadInputError):
    """Several input problems found by one validation pass, reported together.

    Parameters
    ----------
    errors : list of BadInputError
        The problems, in the order they were found (at least one).
    """

    def __init__(self, errors: list[BadInputError]):
        if not errors:
            raise ValueError("BadInputErrors needs at least one error")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.what, first.expected, first.got, first.fix)

    @property
    def message(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0].message
        lines = [f"{len(self.errors)} input problems found:"]
        lines += [f"  {i}. {e.message}" for i, e in enumerate(self.errors, 1)]
        return "\n".join(lines)


class ResourceError(BadInputError):
    """Not enough memory, disk or permission to run with the requested settings."""


class InterruptedFit(PaviParcelError):
    """Raised after a fit checkpointed on SIGTERM or SIGUSR1, so the caller can exit cleanly."""
