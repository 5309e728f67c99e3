"""What every command shares: --json / --csv, stdout for data, stderr for people, errors to exit codes.

Exit codes, the same in table, --csv and --json mode (``EXIT_CODES`` below is the one table; docs/cli.md is
rendered from it):

====  =================  ==========================================================================
code  name               meaning
====  =================  ==========================================================================
0     EXIT_OK            success
1     EXIT_FAILURE       a failure not caused by the input: database unreachable, port in use, broken data file
2     EXIT_BAD_INPUT     bad input or usage (unknown name, out-of-range value, unreadable file; Typer's usage
                         errors too); an ingest that rejects every row
3     EXIT_POLICY        a policy result a script may branch on: request denied or pending, admission refused
4     EXIT_INFEASIBLE    a valid question with no option that meets the targets (plan), or an estimate that
                         does not fit in device memory
5     EXIT_PARTIAL       partial ingest: some rows were rejected, the others stored
130   EXIT_INTERRUPTED   interrupted by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it); nothing was kept
====  =================  ==========================================================================

Tables: every command that prints a Rich table through ``stdout_console()`` also takes ``--csv`` (added by
``handle_errors`` to every command with ``--json``) and never cuts a number or an id: piped, a table is laid out
at its natural width (one line per row); on a narrow terminal cells wrap (fold) instead of ending in an ellipsis.
"""

from __future__ import annotations

import contextvars
import csv
import functools
import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any

import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_POLICY = 3
EXIT_INFEASIBLE = 4
EXIT_PARTIAL = 5
EXIT_INTERRUPTED = 130

#: (code, constant, meaning): the one exit-code table of the CLI (docs/cli.md is rendered from it)
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (EXIT_OK, "EXIT_OK", "success"),
    (
        EXIT_FAILURE,
        "EXIT_FAILURE",
        "a failure not caused by the input: database unreachable, port in use, broken catalog or data file, "
        "a validation bound missed, an alert delivery that failed",
    ),
    (
        EXIT_BAD_INPUT,
        "EXIT_BAD_INPUT",
        "bad input or usage: unknown or ambiguous name (with suggestions), out-of-range value, unreadable file, "
        "Typer's own usage errors; an ingest that rejects every row",
    ),
    (
        EXIT_POLICY,
        "EXIT_POLICY",
        "a policy result a script may branch on: request denied or pending approval, admission refused",
    ),
    (
        EXIT_INFEASIBLE,
        "EXIT_INFEASIBLE",
        "nothing feasible: a valid plan question with no option that meets the targets, or an estimate that "
        "does not fit in device memory (the output, table or JSON, says why and by how much)",
    ),
    (EXIT_PARTIAL, "EXIT_PARTIAL", "partial ingest: some rows were rejected (listed), the others stored"),
    (
        EXIT_INTERRUPTED,
        "EXIT_INTERRUPTED",
        "interrupted by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it): what the run wrote was undone",
    ),
)

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


#: set by handle_errors for the duration of a command run with --csv
_CSV_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("flopwise_csv_mode", default=False)

CsvFlag = Annotated[
    bool,
    typer.Option("--csv", help="Print every table as CSV on stdout (numbers without thousands separators)."),
]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    """The console for results: tables never cut a cell (see the module docstring); with --csv, tables are
    written as CSV on stdout and any other text goes to stderr."""
    return _OutputConsole()


class _OutputConsole:
    """A Rich console front: ``print`` of a Table is laid out so that no cell is cut (or written as CSV)."""

    def __init__(self) -> None:
        from rich.console import Console

        self._csv = _CSV_MODE.get()
        self._console = Console(stderr=True) if self._csv else Console()
        self._tables = 0

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.table import Table

        if len(objects) == 1 and isinstance(objects[0], Table):
            if self._csv:
                self._write_csv(objects[0])
            else:
                self._print_table(objects[0])
            return
        self._console.print(*objects, **kwargs)

    def _print_table(self, table: Any) -> None:
        from rich.console import Console
        from rich.measure import Measurement

        for column in table.columns:
            column.overflow = "fold"  # a cell too wide for the terminal wraps; never an ellipsis
        console = self._console
        if not console.is_terminal:
            # piped or redirected: the table's natural width, however wide (Rich squeezes columns below their
            # longest word when the table is wider than the console, so anything narrower could break an id)
            needed = Measurement.get(console, console.options.update(width=10**6), table).maximum
            if needed > console.width:
                console = Console(width=needed + 1, force_terminal=False)
        console.print(table)

    def _write_csv(self, table: Any) -> None:
        if self._tables:
            sys.stdout.write("\n")  # a blank line between two tables of one command
        self._tables += 1
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if table.show_header:
            writer.writerow([_plain_cell(c.header) for c in table.columns])
        cells = [list(c.cells) for c in table.columns]
        for row in zip(*cells, strict=False):
            writer.writerow([_plain_cell(v) for v in row])


_GROUPED_NUMBER = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def _plain_cell(value: Any) -> str:
    """A cell's text without Rich markup; '4,096' -> '4096' so that spreadsheets read numbers."""
    from rich.text import Text

    text = value.plain if isinstance(value, Text) else Text.from_markup(str(value)).plain
    text = text.strip()
    if text == "-":  # the table's mark for "no value"
        return ""
    return text.replace(",", "") if _GROUPED_NUMBER.match(text) else text


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
    """Turn flopwise errors into one red line on stderr and an exit code; never a traceback.

    A command with a ``json_out`` parameter also gets ``--csv`` (tables as CSV on stdout); both at once is a
    usage error. A database that cannot be reached or read is one line and exit 1.
    """
    signature = inspect.signature(func, eval_str=True)
    json_param = next((p.name for p in signature.parameters.values() if "--json" in _option_names(p)), None)
    has_csv = any("--csv" in _option_names(p) for p in signature.parameters.values())
    takes_csv = json_param is not None and not has_csv

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flopwise.errors import (
            CatalogFileError,
            FlopwiseError,
            InfeasibleError,
            InputError,
            _UnknownNameError,
        )

        csv_out = bool(kwargs.pop("csv_out", False)) if takes_csv else False
        if csv_out and json_param and kwargs.get(json_param):
            _fail("--csv and --json: give one of them", EXIT_BAD_INPUT)
        token = _CSV_MODE.set(csv_out)
        try:
            return func(*args, **kwargs)
        except (InputError, _UnknownNameError) as err:
            _fail(str(err), EXIT_BAD_INPUT)
        except CatalogFileError as err:
            _fail(str(err), EXIT_FAILURE)
        except InfeasibleError as err:
            _fail(str(err), EXIT_INFEASIBLE)
        except FlopwiseError as err:
            _fail(str(err), EXIT_BAD_INPUT)
        except Exception as err:
            if type(err).__module__.split(".")[0] not in ("sqlalchemy", "psycopg", "sqlite3"):
                raise
            _fail(database_error_message(err), EXIT_FAILURE)
        finally:
            _CSV_MODE.reset(token)

    if takes_csv:
        params = list(signature.parameters.values())
        params.append(
            inspect.Parameter("csv_out", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=CsvFlag)
        )
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**getattr(func, "__annotations__", {}), "csv_out": CsvFlag}
    return wrapper


def check_choice(field: str, value: str | None, known: Iterable[str]) -> str | None:
    """*value* (case-insensitive) as spelled in *known*; a value that matches nothing is an InputError with
    suggestions, so that a misspelled filter never prints an empty list as if nothing matched."""
    from flopwise.errors import InputError, suggest

    if value is None:
        return None
    choices = sorted(set(known))
    folded = {c.casefold(): c for c in choices}
    if value.strip().casefold() in folded:
        return folded[value.strip().casefold()]
    close = suggest(value, choices)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(field, value, f"{hint}known: {', '.join(choices)}")


def _option_names(param: inspect.Parameter) -> set[str]:
    """The option names ("--json", "-j") a Typer parameter declares in its Annotated metadata."""
    names: set[str] = set()
    for meta in getattr(param.annotation, "__metadata__", ()):
        names.update(getattr(meta, "param_decls", None) or ())
        first = getattr(meta, "default", None)  # typer.Option("--json", ...) in Annotated: the first name
        if isinstance(first, str) and first.startswith("-"):
            names.add(first)
    return names


def database_error_message(err: BaseException) -> str:
    """One line for a database that cannot be reached or read (no driver traceback, no SQL)."""
    first = str(getattr(err, "orig", None) or err).strip().splitlines()
    return (
        f"database error: {first[0] if first else type(err).__name__}. Check --database-url "
        "(or FLOPWISE_DATABASE_URL) and that the database server is running."
    )


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
