"""Redact personal data and secrets from text columns, counting every replacement by kind.

Each kind is one regular expression applied to a whole polars column (Rust regex, no Python loop per
row); credit-card candidates are kept only when they pass the Luhn check, which runs once per
*distinct* candidate. Kinds apply in the order of ``PATTERNS`` — secrets first, then e-mail addresses,
cards, IP addresses, phone numbers — so a key that contains digits is not half-eaten by the phone rule::

    >>> import polars as pl
    >>> out, counts = redact(pl.Series(["mail me: ann@example.org"]), ["email"])
    >>> out.to_list(), counts
    (['mail me: [REDACTED_EMAIL]'], {'email': 1})

What is *not* caught: names, street addresses, dates of birth, phone numbers written without
separators, IPv6 addresses with fewer than three groups (``::1``, ``fe80::1``), keys of other providers.
IPv4 may also match dotted version strings such as ``1.2.3.4``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# kind -> (pattern, replacement); `$1` keeps the first capture group (used to keep "Bearer ")
PATTERNS: dict[str, tuple[str, str]] = {
    "openai_key": (r"\bsk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_\-]{20,}", "[REDACTED_API_KEY]"),
    "hf_token": (r"\bhf_[A-Za-z0-9]{30,}\b", "[REDACTED_HF_TOKEN]"),
    "aws_access_key": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[REDACTED_AWS_KEY]"),
    "github_token": (r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b", "[REDACTED_GITHUB_TOKEN]"),
    "bearer_token": (r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{16,}=*", "${1} [REDACTED_TOKEN]"),
    "email": (r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b", "[REDACTED_EMAIL]"),
    "credit_card": (r"\b\d(?:[ \-]?\d){12,18}\b", "[REDACTED_CREDIT_CARD]"),
    "ipv6": (
        r"(?i)\b(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}"
        r"|(?:[0-9a-f]{1,4}:){2,6}:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4}"
        r"|(?:[0-9a-f]{1,4}:){1,5}(?::[0-9a-f]{1,4}){2,5})\b",
        "[REDACTED_IP]",
    ),
    "ipv4": (r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b", "[REDACTED_IP]"),
    # separators are required, so plain long numbers (ids, amounts) are left alone
    "phone": (
        r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\b\d{2,4}[ .\-])\d{3,4}[ .\-]\d{3,4}\b",
        "[REDACTED_PHONE]",
    ),
}
KINDS = list(PATTERNS)


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of the digits of ``number`` (separators ignored).

    >>> luhn_valid("4111 1111 1111 1111"), luhn_valid("4111 1111 1111 1112")
    (True, False)
    """
    digits = np.array([int(c) for c in number if c.isdigit()][::-1], dtype=np.int64)
    if len(digits) < 13:
        return False
    doubled = digits[1::2] * 2
    return int(digits[0::2].sum() + (doubled - 9 * (doubled > 9)).sum()) % 10 == 0


def _redact_cards(s: pl.Series, pattern: str, replacement: str) -> tuple[pl.Series, int]:
    found = s.str.extract_all(pattern)
    candidates = found.explode().drop_nulls().unique().to_list()
    valid = [c for c in candidates if luhn_valid(c)]  # once per distinct candidate, not per row
    if not valid:
        return s, 0
    count = int(found.list.eval(pl.element().is_in(valid)).list.sum().sum())
    # longest first, so a valid number is not partly replaced by a valid prefix
    valid.sort(key=len, reverse=True)
    return s.str.replace_many(valid, [replacement] * len(valid)), count


def redact(texts: pl.Series, kinds: list[str]) -> tuple[pl.Series, dict[str, int]]:
    """``texts`` with every match of the enabled ``kinds`` replaced, and the number of matches per kind."""
    unknown = [k for k in kinds if k not in PATTERNS]
    if unknown:
        raise ValueError(f"unknown PII kind(s) {unknown}; known: {KINDS}")
    counts: dict[str, int] = {}
    s = texts
    for kind in KINDS:
        if kind not in kinds:
            continue
        pattern, replacement = PATTERNS[kind]
        if kind == "credit_card":
            s, counts[kind] = _redact_cards(s, pattern, replacement)
            continue
        counts[kind] = int(s.str.count_matches(pattern).sum() or 0)
        if counts[kind]:
            s = s.str.replace_all(pattern, replacement)
    return s, counts
