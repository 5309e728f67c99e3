"""Column types that keep flopwise's invariants in the database: exact ``Decimal`` money and UTC-aware time.

``Money`` is ``NUMERIC(20, 6)`` on PostgreSQL. SQLite has no exact decimal type (its NUMERIC affinity stores
REAL, a binary float), so there the same column holds an ``INTEGER`` count of micro-units (value x 10**6):
``SUM``, ``<`` and ``ORDER BY`` stay exact and numeric in SQL, and the range is limited to what a 64-bit
integer holds (|value| <= 9,223,372,036,854.775807). Floats are refused on the way in, so a binary float
never becomes money by accident.

``UTCDateTime`` is ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and the ISO text SQLite uses for ``DATETIME``
(stored as naive UTC). Naive datetimes are refused on the way in; every value comes back aware, in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from flopwise import money
from flopwise.units import MICRO_USD

__all__ = ["MONEY_PLACES", "MONEY_PRECISION", "Money", "UTCDateTime", "to_money", "utcnow"]

#: digits in total and after the point of every money / quota column (``NUMERIC(20, 6)``)
MONEY_PRECISION = 20
MONEY_PLACES = 6
_QUANTUM = MICRO_USD  # 10**-MONEY_PLACES
_MICRO = 10**MONEY_PLACES
_PG_MAX = Decimal(10) ** (MONEY_PRECISION - MONEY_PLACES)  # exclusive bound of NUMERIC(20, 6)
_SQLITE_MAX_MICRO = 2**63 - 1


def utcnow() -> datetime:
    """The current time, aware, in UTC (the only clock the store reads: column defaults)."""
    return datetime.now(UTC)


def to_money(value: Decimal | int | str, field: str = "amount") -> Decimal:
    """*value* as a Decimal rounded half-even to 6 places (:func:`flopwise.money.to_money` at ``MICRO_USD``);
    floats are refused (they are not exact).

    Raises ``ValueError`` (an InputError) naming *field* for floats, NaN, infinities and values outside
    ``NUMERIC(20, 6)``.
    """
    dec = money.to_money(value, field, _QUANTUM)
    if abs(dec) >= _PG_MAX:
        raise ValueError(f"{field}: {value!r} does not fit NUMERIC(20, 6); keep |value| below 1e14")
    return dec


class Money(TypeDecorator[Decimal]):
    """Exact money / quota amount: ``NUMERIC(20, 6)``, or integer micro-units on SQLite (see module docstring)."""

    impl = Numeric(MONEY_PRECISION, MONEY_PLACES, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        dec = to_money(value)
        if dialect.name == "sqlite":
            micro = int(dec.scaleb(MONEY_PLACES))
            if abs(micro) > _SQLITE_MAX_MICRO:
                raise ValueError(
                    f"amount: {value!r} is beyond SQLite's 64-bit micro-unit range "
                    "(|value| <= 9223372036854.775807); use PostgreSQL for larger amounts"
                )
            return micro
        return dec

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            if isinstance(value, float):  # an aggregate SQLite computed in REAL (e.g. AVG): round back
                return money.quantize(Decimal(repr(value)).scaleb(-MONEY_PLACES), _QUANTUM)
            return money.quantize(Decimal(int(value)).scaleb(-MONEY_PLACES), _QUANTUM)
        return money.quantize(Decimal(value), _QUANTUM)

    @property
    def python_type(self) -> type:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC and returned aware in UTC; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"timestamp: {value!r} is not a datetime; pass datetime.now(UTC) or similar")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"timestamp: {value.isoformat()!r} is naive; pass an aware datetime (e.g. tzinfo=datetime.UTC)"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def python_type(self) -> type:
        return datetime
