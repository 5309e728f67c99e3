"""Reading a fetched CSV safely: columns by header name, prices as Decimal, every error naming source and line.

Pure: text in, records out. A fetched file that is missing a column, has a renamed one, carries a price of
"N/A" or a negative one, or was cut short raises :class:`FetchError`, which names the source, the file and the
line, so the refresh stops before anything is written and the previous catalog stays in place.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flopwise.errors import CatalogFileError

__all__ = ["FetchError", "Record", "read_table"]


class FetchError(CatalogFileError):
    """A fetched source file that cannot be trusted. ``path`` is ``"<source> <file or URL>"``."""

    def __init__(self, source: str, location: str, line: int | None, field: str | None, message: str) -> None:
        self.source = source
        self.location = location
        super().__init__(f"source {source}: {location}", line, field, message)


@dataclass(frozen=True)
class Record:
    """One data line of a fetched table, with what is needed to blame it."""

    source: str
    location: str
    line: int
    cells: dict[str, str]

    def fail(self, field: str | None, message: str) -> FetchError:
        return FetchError(self.source, self.location, self.line, field, message)

    def text(self, column: str) -> str:
        return self.cells[column].strip()

    def price(self, column: str) -> Decimal | None:
        """A USD amount, or None when the cell is empty. "N/A", words, NaN and negatives raise."""
        raw = self.cells[column].strip()
        if not raw:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise self.fail(column, f"{raw!r} is not a price; the source must give a plain number") from None
        if not value.is_finite():
            raise self.fail(column, f"{raw!r} is not a finite price")
        if value < 0:
            raise self.fail(column, f"{raw!r} is negative; a price cannot be below zero")
        return value

    def number(self, column: str) -> float | None:
        raw = self.cells[column].strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(column, f"{raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise self.fail(column, f"{raw!r} is not a finite, non-negative number")
        return value


def read_table(source: str, location: str, text: str, required: Sequence[str]) -> Iterator[Record]:
    """Yield the data lines of the CSV *text* (LF or CRLF, with or without a final newline).

    The header must contain every column of *required* (in any order; other columns are ignored). Every data
    line must have as many cells as the header: a shorter last line is the sign of a truncated download.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise FetchError(source, location, 1, None, "is empty; expected a CSV header line") from None
    except csv.Error as err:
        raise FetchError(source, location, 1, None, f"is not CSV ({err})") from None
    missing = [c for c in required if c not in header]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, [h for h in header if h not in required], n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (renamed to {close[0]!r}?)" if close else ""))
        raise FetchError(
            source,
            location,
            1,
            None,
            f"header lacks column {', '.join(hints)}; the source changed its format, so nothing was written "
            f"(header: {','.join(header)})",
        )
    width = len(header)
    try:
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != width:
                raise FetchError(
                    source,
                    location,
                    reader.line_num,
                    None,
                    f"has {len(cells)} cells but the header has {width}; the file is truncated or corrupt "
                    "(download it again)",
                )
            yield Record(source, location, reader.line_num, dict(zip(header, cells, strict=True)))
    except csv.Error as err:
        raise FetchError(
            source,
            location,
            reader.line_num,
            None,
            f"cannot be parsed ({err}); the file is truncated or corrupt",
        ) from None
