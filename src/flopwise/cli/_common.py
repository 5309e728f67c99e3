"""What every command shares: the --json flag, stdout for data, stderr for people, errors to exit codes.

Exit codes: 0 ok; 1 a failure that is not the user's input (e.g. a broken data file, a failed validation bound);
2 bad input or usage (unknown device/model, out-of-range value; Typer's own usage errors use 2 as well);
3 a policy result a script may branch on (reserved for budgets and approvals).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any

import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_POLICY = 3

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]
CatalogDir = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        envvar="FLOPWISE_CATALOG_DIR",
        help="Directory of catalog CSVs that extend or override the built-in catalog.",
        show_default=False,
    ),
]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console():
    from rich.console import Console

    return Console()


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # Money leaves as a decimal string ("1234.56"), never a float, as the estimator's to_dict() does.
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with None, recursively."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_clean(data), default=_default, indent=2, allow_nan=False) + "\n")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn flopwise errors into one red line on stderr and an exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flopwise.errors import CatalogFileError, FlopwiseError, InputError, _UnknownNameError

        try:
            return func(*args, **kwargs)
        except (InputError, _UnknownNameError) as err:
            _fail(str(err), EXIT_BAD_INPUT)
        except CatalogFileError as err:
            _fail(str(err), EXIT_FAILURE)
        except FlopwiseError as err:
            _fail(str(err), EXIT_BAD_INPUT)

    return wrapper


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    stderr_console().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Human formatting: 1.23e+23, 4,096, 0.512; None -> '-'."""
    if value is None:
        return "-"
    if isinstance(value, str) and value.replace(".", "", 1).lstrip("-").isdigit():
        value = Decimal(value)  # money arrives as a decimal string from to_dict()
    if isinstance(value, Decimal):
        if abs(value) >= 1 or value == 0:
            return f"{value:,.2f}"
        text = f"{value:.4f}".rstrip("0")  # sub-dollar amounts: up to four decimals, at least two
        return text if len(text.split(".")[1]) >= 2 else f"{value:.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


CalibrateFlag = Annotated[
    bool,
    typer.Option(
        "--calibrate",
        help="Also correct the estimate with plan-vs-actual factors learned from metered usage in the store "
        "(per device and workload kind).",
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FLOPWISE_DATABASE_URL",
        help="Store to read calibration from (default: the embedded SQLite file).",
        show_default=False,
    ),
]
