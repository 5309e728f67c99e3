"""The whole exception tree of flopwise.

::

    FlopwiseError                     base of everything flopwise raises on purpose
    ├── InputError                    a bad value from the user (field, value, what is accepted)
    ├── CatalogError                  a catalog or model-registry file or lookup problem
    │   ├── CatalogFileError          a data file that fails validation (path, line, field)
    │   ├── UnknownAcceleratorError   a device name that resolves to nothing (with suggestions)
    │   ├── UnknownModelError         a model name that resolves to nothing (with suggestions)
    │   ├── UnknownRegionError        a region that resolves to nothing (with suggestions)
    │   └── ModelConfigError          a Hugging Face config.json that cannot be read
    ├── IngestError                   a usage file that cannot be understood at all (path, line, fix)
    ├── UnsupportedError              a valid request the hardware or estimator cannot do
    │                                 (e.g. a quantization the device cannot run)
    └── InfeasibleError               a valid question with no answer that meets its targets (CLI exit 4)

The domain raises; the edges (CLI, API) translate into exit codes and HTTP statuses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CatalogError",
    "CatalogFileError",
    "FlopwiseError",
    "InfeasibleError",
    "IngestError",
    "InputError",
    "ModelConfigError",
    "UnknownAcceleratorError",
    "UnknownModelError",
    "UnknownRegionError",
    "UnsupportedError",
    "suggest",
]


def suggest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Closest matches of *name* among *choices* (case-insensitive), best first."""
    pool = {c.lower(): c for c in choices}
    return [pool[m] for m in difflib.get_close_matches(name.lower(), list(pool), n=n, cutoff=0.5)]


class FlopwiseError(Exception):
    """Base class of every error flopwise raises on purpose."""


class InputError(FlopwiseError, ValueError):
    """A bad value given by the user. Names the field, the value and what is accepted."""

    def __init__(self, field: str, value: object, accepted: str) -> None:
        self.field = field
        self.value = value
        self.accepted = accepted
        super().__init__(f"{field}: {value!r} is not valid; {accepted}.")


class CatalogError(FlopwiseError):
    """A problem with the hardware catalog or the model registry."""


class CatalogFileError(CatalogError):
    """A catalog data file that fails validation."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = path if line is None else f"{path}:{line}"
        what = f" field {field!r}" if field else ""
        super().__init__(f"{where}:{what} {message}")


class _UnknownNameError(CatalogError, LookupError):
    kind = "name"
    list_command = ""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = suggestions or []
        msg = f"Unknown {self.kind} {name!r}."
        if self.suggestions:
            msg += " Did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        if self.list_command:
            msg += f" Run `{self.list_command}` to see all."
        super().__init__(msg)


class UnknownAcceleratorError(_UnknownNameError):
    """A device name that matches no catalog device."""

    kind = "device"
    list_command = "flopwise catalog devices"


class UnknownModelError(_UnknownNameError):
    """A model name that matches no registry model."""

    kind = "model"
    list_command = "flopwise models list"


class UnknownRegionError(_UnknownNameError):
    """A region that matches no catalog region."""

    kind = "region"
    list_command = "flopwise catalog regions"


class ModelConfigError(CatalogError):
    """A Hugging Face config.json that is missing fields or cannot be parsed."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class IngestError(FlopwiseError):
    """A usage file that cannot be understood at all. Names the file, the line (when one is to blame) and
    what to do. Malformed single rows are not errors: parsers report them as ``RejectedRow`` and go on."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")


class UnsupportedError(FlopwiseError):
    """A valid request that the hardware or the estimator cannot do."""


class InfeasibleError(FlopwiseError):
    """A valid question with no option that meets its targets (e.g. nothing fits a deadline). CLI exit 4."""
