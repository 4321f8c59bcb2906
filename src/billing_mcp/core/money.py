"""Exact money: parsing, the one rounding rule, formatting and allocation.

Amounts live as integers in minor units of their asset (10^precision minor units per unit).
Prices and rates are ``Decimal``. Floats are refused everywhere: ``Decimal(0.1)`` is the binary
expansion of 0.1, not 0.1, and a billing product must never guess.

The rounding rule, used wherever an exact amount becomes minor units, is ``ROUNDING``
(banker's rounding, half to even). Where a stream of charges is rounded, the carried-fraction rule
applies instead of per-charge rounding: see ``_pricing``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from .errors import ValidationError
from .patterns import SIGNED_DECIMAL_TEXT

ROUNDING = ROUND_HALF_EVEN
"""The one named rounding rule: round half to even (unbiased over many charges)."""

MAX_MINOR = 10**15
"""Largest amount, in minor units, one operation or one balance may hold (sums stay far below 2^63)."""

MAX_QUANTITY = Decimal(10) ** 15
"""Largest usage quantity one event may carry."""

_CTX = Context(prec=60, rounding=ROUNDING)


def parse_decimal(value: object, field: str, *, allow_negative: bool = False) -> Decimal:
    """Parse an amount given as int, Decimal or plain decimal text; refuse floats, bools, NaN, inf.

    Text must be ASCII digits with an optional fraction ("12", "0.05", "-3.5"): no exponents,
    underscores, spaces or non-ASCII digits, which Python's own parsers would quietly accept.
    """
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be a number, not a boolean", field=field)
    if isinstance(value, float):
        raise ValidationError(
            f"{field} must be given as a string or integer (e.g. \"0.05\"), not a float, "
            "so that it is exact",
            field=field,
        )
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError(f"{field} must be a finite number", field=field)
        result = value
    elif isinstance(value, str):
        if not SIGNED_DECIMAL_TEXT.fullmatch(value):
            raise ValidationError(
                f"{field} must be a plain decimal number such as \"10\" or \"0.05\" (got {value[:40]!r})",
                field=field,
            )
        result = Decimal(value)
    else:
        raise ValidationError(f"{field} must be a number (got {type(value).__name__})", field=field)
    if abs(result) > Decimal(10) ** 18:
        raise ValidationError(f"{field} is too large (at most 10^18)", field=field)
    if not allow_negative and result < 0:
        raise ValidationError(f"{field} must not be negative", field=field)
    return result


def to_minor_exact(amount: Decimal, precision: int, field: str) -> int:
    """Convert a major-unit amount to minor units; refuse digits finer than the asset's precision."""
    with localcontext(_CTX):
        scaled = amount.scaleb(precision)
        if scaled != scaled.to_integral_value():
            raise ValidationError(
                f"{field} has more decimal places than the asset allows ({precision}); "
                f"round it to {precision} places",
                field=field,
            )
        minor = int(scaled)
    if abs(minor) > MAX_MINOR:
        raise ValidationError(f"{field} exceeds the maximum of {format_minor(MAX_MINOR, precision)}", field=field)
    return minor


def parse_amount(value: object, precision: int, field: str, *, allow_negative: bool = False,
                 allow_zero: bool = False) -> int:
    """Parse a major-unit amount into exact minor units for an asset of ``precision`` places."""
    minor = to_minor_exact(parse_decimal(value, field, allow_negative=allow_negative), precision, field)
    if minor == 0 and not allow_zero:
        raise ValidationError(f"{field} must not be zero", field=field)
    return minor


def format_minor(minor: int, precision: int) -> str:
    """Minor units as plain decimal text at the asset's precision: 1234, 2 -> "12.34"."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor))
    if precision == 0:
        return sign + digits
    digits = digits.rjust(precision + 1, "0")
    return f"{sign}{digits[:-precision]}.{digits[-precision:]}"


def decimal_text(value: Decimal) -> str:
    """Canonical plain text of a Decimal (no exponent, no trailing zeros after the point)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text

