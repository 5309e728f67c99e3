"""The ``match`` of an attribution rule: which keys it may name and what shape each value has. Pure.

Kept apart from :mod:`flopwise.meter.attribution` (which applies rules to usage records) so that the store, which
saves rules, and the meter, which applies them, check a rule the same way without the store importing the meter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flopwise.errors import InputError

__all__ = ["MATCH_KEYS", "validate_match"]

MATCH_KEYS = (
    "source",
    "account",
    "partition",
    "user",
    "namespace",
    "tags",
    "tag",
    "labels",
    "label",
    "resource_id",
)


def validate_match(match: Mapping[str, Any]) -> None:
    """Raise InputError for a match that names an unknown key or has a value of the wrong shape."""
    if not isinstance(match, Mapping):
        raise InputError("match", match, "give a JSON object such as {'account': 'physics'}")
    for key, value in match.items():
        if key not in MATCH_KEYS:
            raise InputError(f"match.{key}", value, f"use the keys {', '.join(MATCH_KEYS)}")
        if key in ("tags", "labels") or (key in ("tag", "label") and isinstance(value, Mapping)):
            if not isinstance(value, Mapping) or not value:
                raise InputError(f"match.{key}", value, "give an object of key -> glob, e.g. {'team': 'nlp'}")
            for k, v in value.items():
                _check_globs(f"match.{key}.{k}", v)
        elif key in ("tag", "label"):
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, str) or "=" not in item:
                    raise InputError(f"match.{key}", value, "give 'key=value' (value may be a glob)")
        else:
            _check_globs(f"match.{key}", value)


def _check_globs(field_name: str, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise InputError(field_name, value, "give a non-empty string glob or a list of them")
