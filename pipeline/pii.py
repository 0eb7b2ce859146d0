"""Find and redact personal data and secrets in text columns, counting every replacement by kind.

Each kind is a ``Detector`` (``pipeline.column_redact``, which runs it): a regular expression run over a whole
polars column (Rust regex, no Python loop per row) and, for kinds where a pattern alone is not precise enough, a validator run once
per *distinct* candidate the pattern found:

- phone numbers: candidates are checked with Google's libphonenumber (``phonenumbers``): a number
  written internationally (``+49 30 123456``, ``0049 ...``, ``+14155552671``) must be a valid number of
  its country; a national number must be valid in one of ``PHONE_REGIONS`` and written with separators and
  its region's trunk prefix (``020 7946 0958``, Russian ``8 916 123-45-67``) or in the North American form
  (``(415) 555-2671``); a Chinese mobile number, dialled without a trunk prefix, is 11 digits from 13-19 that
  libphonenumber types as mobile (``13800138000``, ``138 0013 8000``); North American ones also with their
  leading 1 (``1-800-424-4010``), French ones in dotted pairs (``01.23.45.67.89``); groups may be separated by
  no-break or thin spaces and en dashes (as cards and IBANs by no-break spaces). A number glued to a Latin letter or digit
  (``abb14208324033b1``, a hash) is not one. Dates and other plain digit runs are left alone.
- credit cards: 13-19 digits starting like a card network (2-6) that pass the Luhn check.
- IPv4: four octets <= 255, not a netmask (``255.255.255.0``), not part of a longer dotted number
  (OIDs, versions such as ``10.0.19045.3803``) and not after a word like "version" or "build"; loopback
  (``127.0.0.1``) and ``0.0.0.0`` name the machine itself, no one's address, and stay (code answers use them).
- IPv6: whatever ``ipaddress`` accepts with at least one digit and two groups (``fe80::1%eth0``,
  ``::ffff:192.0.2.1``), so ``std::vector``, ``a::b`` and ``100::`` stay, and so does loopback ``::1``.
- e-mails: Unicode local parts and domains (``müller@beispiel.de``), ``name [at] domain [dot] com``, and
  percent-encoded in a URL (``reset?email=ann%40example.org``); not ``icon@2x.png``.
- AWS secret keys: 40 base64 characters with upper case, lower case, digits and high entropy (a git
  SHA-1 is lower-case hex and stays).
- HTTP Basic credentials: the base64 after "Basic" must decode to printable ``user:password``
  (RFC 7617), so "Basic authentication" and other prose stay.
- passwords in URLs (``postgres://app:s3cr3t@10.0.0.5/db``), unless a placeholder (``password``,
  ``<password>``, ``${DB_PASS}``).
- IBANs: a known country, its length and BBAN format, and the ISO 13616 mod-97 check
  (``python-stdnum``); the digits after a failed IBAN's ``DE89`` are not taken for a card either.
- Chinese resident identity numbers (居民身份证号码, GB 11643): 17 digits and a check character whose region
  code, birth date and ISO 7064 check are valid (``python-stdnum``'s ``cn.ric``): a WildChat user pasted a
  transcript with one beside the student's name, and neither the card nor the phone rule took it.

Matched rows are rewritten in Python only when a validated candidate was found (rare: most rows have
none), so the cost per row is the Rust regex scan::

    >>> import polars as pl
    >>> out, counts = redact(pl.Series(["mail me: ann@example.org"]), ["email"])
    >>> out.to_list(), counts
    (['mail me: [REDACTED_EMAIL]'], {'email': 1})

Kinds apply in the order of ``DETECTORS`` (secrets first, then e-mails, IBANs, resident ids, cards, IPs,
phones), so a key that contains digits is not half-eaten by the phone rule. Full-width forms, as Chinese and Japanese
input methods type them (``１３８００１３８０００``, ``ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ``), are read as their ASCII forms by the
phone, card, e-mail and resident-id rules (``narrow``). A letter of a script written
without spaces (Han, Kana, Hangul, Thai) bounds a phone number, card, IP or e-mail as a space does: "手机号是+86
138 0013 8000" is caught, and "发送到ann@qq.com谢谢" keeps "发送到" and "谢谢". What is *not* caught: names, street
addresses, dates of birth, national ids other than China's, national phone numbers of regions outside
``PHONE_REGIONS``, passwords in config files or code, lower-case IBANs, bank account numbers without an IBAN,
other providers' keys.
``bench/export.py`` runs these detectors against the regex-only redactor they replaced (bench/README.md:
fixture recall 1.00 against 0.53, at 0.36x its speed); no PII library (Presidio, scrubadub) has been benched.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import unicodedata
from collections import Counter
from functools import cache, lru_cache, partial

import numpy as np
import phonenumbers
import polars as pl
import regex
from stdnum import iban as stdnum_iban
from stdnum.cn import ric as stdnum_cn_ric

from pipeline.column_redact import Detector, compiled, replace_plain, replace_validated

# Regions whose national phone formats (without +country code) are recognised; numbers written
# with + or 00 are recognised for every country.
PHONE_REGIONS = ("US", "GB", "CA", "AU", "IN", "DE", "FR", "CN", "RU")


def narrow(s: str) -> str:
    """``s`` with full-width forms (``１３８``, ``ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ``, as Chinese and Japanese input methods type them)
    folded to ASCII (Unicode NFKC), for the validators; the patterns take both widths.

    >>> narrow("１３８－００１３　８０００")
    '138-0013 8000'
    """
    return unicodedata.normalize("NFKC", s)


# --- validators (one call per distinct candidate) --------------------------------------------------


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


def _span(m: regex.Match) -> tuple[int, int]:
    return (0, len(m.group("pii")))


def _card(m: regex.Match) -> tuple[int, int] | None:
    s = narrow(m.group("pii"))
    return _span(m) if s[0] in "23456" and not m.group("iban") and luhn_valid(s) else None


VERSION_WORDS = {"version", "ver", "v", "release", "build", "rev", "revision", "firmware", "update", "patch",
                 "python", "chrome", "firefox", "windows", "android", "ios", "node", "kernel", "section", "oid",
                 "chapter", "rule", "clause", "article", "step", "table", "figure", "fig", "paragraph"}


def _netmask(octets: list[int]) -> bool:
    bits = "".join(f"{o:08b}" for o in octets)
    return octets[0] in (0, 255) and "01" not in bits


def _ipv4(m: regex.Match) -> tuple[int, int] | None:
    s = m.group("pii")
    parts = s.split(".")
    word = (m.group("word") or "").lower()
    if len(parts) != 4 or word in VERSION_WORDS or m.group("tail"):
        return None
    if any(len(p) > 3 or (len(p) > 1 and p[0] == "0") for p in parts):
        return None
    octets = [int(p) for p in parts]
    if max(octets) > 255 or _netmask(octets) or octets[0] == 127 or octets == [0, 0, 0, 0]:
        return None  # loopback and "any" name this machine, no one's address: code keeps them
    return _span(m)


def _ipv6(m: regex.Match) -> tuple[int, int] | None:
    s = m.group("pii")
    core = s.strip("[]").split("%")[0]
    groups = [g for g in core.split(":") if g]
    if not any(c.isdigit() for c in core) or len(groups) < 2:
        return None  # "a::b", "100::", "6::" are code and noise far more often than addresses
    try:
        address = ipaddress.IPv6Address(core)
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified:
        return None  # "::1" names this machine, no one's address
    return _span(m)


FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf", "js", "ts", "css", "py",
                   "json", "yaml", "yml", "txt", "md", "html", "xml", "zip", "tar", "gz"}


def _email(m: regex.Match) -> tuple[int, int] | None:
    domain = compiled(rf"@|%40|{_ATREF}|{_AT}").split(narrow(m.group("pii")).lower(), maxsplit=1)[-1]
    labels = compiled(_DOT).split(domain)
    if labels[-1] in FILE_EXTENSIONS or (labels[0][:-1].isdigit() and labels[0].endswith("x")):
        return None
    return _span(m)


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _aws_secret(m: regex.Match) -> tuple[int, int] | None:
    s = m.group("pii")
    if not (any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)):
        return None
    if _entropy(s) < 4.0:
        return None
    return _span(m)


def _basic_auth(m: regex.Match) -> tuple[int, int] | None:
    """``Basic <base64>`` is a credential when the base64 decodes to printable ``user:password`` (RFC 7617);
    "Basic authentication", "basic idea" and other prose do not decode so."""
    s = m.group("pii")
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, _ = raw.partition(":")
    return _span(m) if colon and user and raw.isprintable() else None


# home folders named for a role or a placeholder, not a person (docs, CI logs, containers)
GENERIC_USERS = {"user", "username", "user_name", "yourname", "your_name", "yourusername", "your_username", "name",
                 "me", "you", "student", "admin", "administrator", "root", "guest", "public", "default", "default user",
                 "all users", "shared", "ubuntu", "runner", "vagrant", "ec2-user", "jovyan", "pi", "example", "..."}


def _home_user(m: regex.Match) -> tuple[int, int] | None:
    """The account folder of ``/home/<name>``, ``/Users/<name>``, ``C:\\Users\\<name>`` (a pasted traceback or
    ``file:///`` URL names the person, often in full: ``C:/Users/Jane%20Doe/``, ``C:\\Users\\Ann Lee\\``), unless it
    is a role or a placeholder (``user``, ``ubuntu``, ``$USER``, ``%USERNAME%``, ``{user}``)."""
    s = m.group("pii").rstrip("\\/")  # a name with spaces is taken with the separator after it
    if s.lower().replace("%20", " ") in GENERIC_USERS or s[0] in "$%{[(*~." or s.startswith("your"):
        return None
    return (0, len(s))


PLACEHOLDER_PASSWORDS = {"password", "passwd", "pass", "pwd", "pw", "secret", "pass123", "mypassword",
                         "yourpassword", "your_password", "your-password", "my_password", "changeme", "xxx"}


def _url_password(m: regex.Match) -> tuple[int, int] | None:
    """The password of ``scheme://user:password@host``, unless it is a placeholder (``password``,
    ``<password>``, ``${DB_PASS}``, ``****``, ``YOUR_PASSWORD``): documentation, not a secret."""
    s = m.group("pii")
    low = s.lower()
    if low in PLACEHOLDER_PASSWORDS or s[0] in "<[{$%*" or set(low) <= {"*", "x", "."} or low.startswith("your"):
        return None
    return _span(m)


def _iban(m: regex.Match) -> tuple[int, int] | None:
    """The longest prefix of the candidate (ending on a letter or digit) that is a valid IBAN: a known
    country, that country's length and BBAN format, and the ISO 13616 mod-97 check (python-stdnum), so
    ``DE89 3704 0044 0532 0130 00 EUR`` loses the IBAN and keeps " EUR"."""
    s = m.group("pii")
    for end in range(len(s), 14, -1):
        if not s[end - 1].isspace() and stdnum_iban.is_valid(narrow(s[:end])):
            return (0, end)
    return None


def _cn_resident_id(m: regex.Match) -> tuple[int, int] | None:
    """A Chinese resident identity number when its region, birth date and check character are valid
    (python-stdnum ``cn.ric``): an 18-digit order number or snowflake id fails its birth date or, 10 times in 11,
    its check character (a region python-stdnum cannot place, ``411111111111111111``, raises KeyError: no id)."""
    try:
        return _span(m) if stdnum_cn_ric.is_valid(narrow(m.group("pii"))) else None
    except KeyError:
        return None


_DATE = regex.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
# North American numbers, also with the country's 1 before them as Americans write it (``1-800-424-4010``)
_NANP = regex.compile(r"(?:1[ .\-]?)?(?:\(\d{3}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{4}")
# French numbers as France writes them, in pairs with dots (``01.23.45.67.89``); other dotted digits stay
_FR_DOTS = regex.compile(r"0[1-9](?:\.\d\d){4}")
# dashes typed or autocorrected between digit groups (hyphen, non-breaking hyphen, figure dash, en dash, minus), in
# the phone pattern; NFKC (``narrow``) already makes no-break, narrow no-break, figure and thin spaces plain spaces
_DASH = "\u2010\u2011\u2012\u2013\u2212"
_DASHES = str.maketrans(dict.fromkeys(_DASH, "-"))
# a Chinese mobile number as people write it, without the trunk 0: 11 digits from 13-19, bare or grouped 3-4-4
_CN_MOBILE = regex.compile(r"1[3-9]\d(?:\d{8}|( |-)\d{4}\1\d{4})")
_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


@cache  # read per candidate, per region: the metadata lookup once per region
def _trunk(region: str) -> str:
    """The national (trunk) prefix dialled before a number of ``region`` inside it: 0 in most regions, 8 in Russia;
    "" for North America (its 1 is written in the NANP form, which ``_NANP`` checks)."""
    prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    return "" if prefix == "1" else prefix


@lru_cache(maxsize=1 << 16)  # export redacts every batch twice (two passes): validate once
def _phone_ok(text: str, regions: tuple[str, ...]) -> bool:
    """A number written internationally (+ or 00) valid in its country; or a national number written as people
    write them, valid in one of ``regions``: North American ``(415) 555-2671`` / ``1-415-555-2671``; French in dotted
    pairs (``01.23.45.67.89``); with the region's trunk prefix and separators (``020 7946 0958``, ``030/123456``,
    ``(02) 9876 5432``, Russian ``8 916 123-45-67``); or a Chinese mobile number, dialled without the trunk 0
    (``13800138000``, ``138 0013 8000``). Full-width digits are read as digits, typographic dashes as hyphens."""
    text = narrow(text).translate(_DASHES)
    text = "+" + text[3:] if text[:3] in ("%2B", "%2b") else text  # percent-encoded in a URL's query: ?tel=%2B336...
    if not 7 <= sum(c.isdigit() for c in text) <= 15 or _DATE.fullmatch(text):
        return False
    try:
        if text.startswith(("+", "00")):
            number = "+" + (text[2:] if text.startswith("00") else text[1:])
            return phonenumbers.is_valid_number(phonenumbers.parse(number))
        if _NANP.fullmatch(text):
            return any(phonenumbers.is_valid_number(phonenumbers.parse(text, r)) for r in ("US", "CA"))
        if "CN" in regions and _CN_MOBILE.fullmatch(text):
            return phonenumbers.number_type(phonenumbers.parse(text, "CN")) in _MOBILE
        if "FR" in regions and _FR_DOTS.fullmatch(text):
            return phonenumbers.is_valid_number(phonenumbers.parse(text, "FR"))
        if "." not in text and regex.search(r"[\s\-()/]", text):
            return any(phonenumbers.is_valid_number(phonenumbers.parse(text, r))
                       for r in regions if (prefix := _trunk(r)) and text.lstrip("(").startswith(prefix))
    except phonenumbers.NumberParseException:
        return False
    return False


def _phone(m: regex.Match, regions: tuple[str, ...] = PHONE_REGIONS) -> tuple[int, int] | None:
    """A valid number (``_phone_ok``) not glued to a Latin letter or digit: ``14208324033b1...`` is a hash."""
    return _span(m) if not m.group("glued") and _phone_ok(m.group("pii"), regions) else None


# --- the detectors ---------------------------------------------------------------------------------

_B64 = r"[A-Za-z0-9_\-]"
# Scripts written without a space before a number or a Latin word ("手机号是+86 138 0013 8000", "发送到ann@qq.com谢谢",
# "010-1234-5678로"): their letters are word characters to ``\b`` and ``\w``, yet end a number or an address.
_NOSPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}"
_EDGE = rf"[{_NOSPACE}]"
# no-break, narrow no-break, figure, thin spaces: French digit groups; web pages put them in phones and IBANs
_SPACES = r"\u00a0\u202f\u2007\u2009"
# an e-mail's local part: letters, digits and ._%+- of the spaced scripts, or a run of one spaceless script's
# letters ("用户@例子.广告"), so an address written into Chinese text does not take the words before it
_L = rf"(?:[^\W{_NOSPACE}]|[.%+\-．％＋－])+|[{_NOSPACE}]+"
# full-width forms (Chinese and Japanese input methods type ＋, －, （）, ．, ＠ and the ideographic space): the
# patterns take them beside their ASCII forms, and the validators read them through ``narrow``
_AT = r"\s*(?:\[\s*at\s*\]|\(\s*at\s*\)|\{\s*at\s*\}|<\s*at\s*>)\s*"
# "@" as an HTML character reference (&#64;, &#x40;, &commat;), as web pages write an address to hide it from scrapers
_ATREF = r"&\#0*64;|&\#[xX]0*40;|&commat;"
_DOT = r"(?:[.．]|\s*(?:\[\s*dot\s*\]|\(\s*dot\s*\)|\{\s*dot\s*\}|<\s*dot\s*>)\s*)"

DETECTORS: list[Detector] = [
    Detector("private_key", r"(?s)-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
             r"-----END (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----", "[REDACTED_PRIVATE_KEY]"),
    Detector("bearer_token", r"(?i)\b(?P<keep>bearer\s+)(?P<pii>[A-Za-z0-9\-._~+/]{16,}=*)", "[REDACTED_TOKEN]"),
    # HTTP Basic credentials: base64 of "user:password" after the word Basic (validated by decoding)
    Detector("basic_auth", r"(?i)\b(?P<keep>basic\s+)(?P<pii>[A-Za-z0-9+/]{8,}={0,2})", "[REDACTED_TOKEN]",
             _basic_auth),
    Detector("jwt", rf"\beyJ{_B64}{{8,}}\.eyJ{_B64}{{8,}}\.{_B64}{{16,}}", "[REDACTED_JWT]"),
    Detector("openai_key", r"\bsk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_\-]{20,}", "[REDACTED_API_KEY]"),
    Detector("hf_token", r"\bhf_[A-Za-z0-9]{30,}\b", "[REDACTED_HF_TOKEN]"),
    Detector("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[REDACTED_AWS_KEY]"),
    # 40 base64 characters after a word such as "secret", "key" or "credentials" on the same line
    Detector("aws_secret_key", r"(?i:secret|key|cred|token|passw|aws)[^\n]{0,40}?[^A-Za-z0-9/+]"
             r"(?P<pii>[A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])", "[REDACTED_AWS_SECRET]", _aws_secret),
    Detector("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
             "[REDACTED_GITHUB_TOKEN]"),
    Detector("slack_token", r"\b(?:xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-\d-[A-Za-z0-9\-]{10,}"
             r"|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_\-]+/[A-Za-z0-9/_\-]{10,})",
             "[REDACTED_SLACK_TOKEN]"),
    Detector("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}", "[REDACTED_GOOGLE_KEY]"),
    Detector("stripe_key", r"\b(?:[sr]k_(?:live|test)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z]{24,})",
             "[REDACTED_STRIPE_KEY]"),
    # personal, deploy, runner, pipeline-trigger, feed, CI-job, OAuth-app tokens; newer ones end ".01.<crc>"
    Detector("gitlab_token", r"\bgl(?:pat|dt|rt|ptt|ft|cbt|oas|soat|agent)-[0-9A-Za-z_\-]{20,}"
             r"(?:\.[0-9A-Za-z_\-]{2,})*", "[REDACTED_GITLAB_TOKEN]"),
    Detector("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b", "[REDACTED_NPM_TOKEN]"),
    Detector("pypi_token", r"\bpypi-AgE[A-Za-z0-9_\-]{50,}", "[REDACTED_PYPI_TOKEN]"),
    Detector("sendgrid_key", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b", "[REDACTED_SENDGRID_KEY]"),
    # the password of a URL with credentials (a database or proxy URL pasted in code); user and host stay
    Detector("url_password", r"(?i)\b(?P<keep>[a-z][a-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<pii>[^\s/@'\"<>]+)@",
             "[REDACTED_PASSWORD]", _url_password),
    # a person's account folder in a path: /home/<name>, /Users/<name> (not inside a URL's path: not after a word character, '.' or '-'),
    # C:\Users\<name> (escaped or not) and as WSL, Git Bash, Cygwin write it (/mnt/c/Users/, /c/Users/, /cygdrive/c/Users/),
    # a name of up to four words when a separator follows it (C:\Users\Ann Lee\);
    # the folder above and below stay
    Detector("home_path", r"(?P<keep>(?:(?:^|[^\w.\-])(?:/home/|(?:(?:/mnt|/cygdrive)?/[A-Za-z])?/Users/)|\b[A-Za-z]:(?:\\{1,2}|/)(?:Users|Documents and Settings)"
             r"(?:\\{1,2}|/)))(?P<pii>[^\\/\s'\"<>:|?*`,;]+(?:(?: [^\\/\s'\"<>:|?*`,;]+){1,3}(?:\\{1,2}|/))?)",
             "[REDACTED_USER]", _home_user),
    Detector("email", rf"(?i)(?P<pii>(?:{_L})(?:[@＠]|%40|{_ATREF}|{_AT})[\p{{L}}\p{{N}}\-]+(?:{_DOT}[\p{{L}}\p{{N}}\-]+)*{_DOT}"
             rf"(?:[^\W\d_{_NOSPACE}]{{2,}}|[{_NOSPACE}]{{2,}}))(?:\b|{_EDGE})",
             "[REDACTED_EMAIL]", _email),
    Detector("iban", rf"(?:\b|{_EDGE})(?P<pii>[A-Z]{{2}}\d{{2}}(?:[ {_SPACES}]?[A-Z0-9]){{11,30}})(?:\b|{_EDGE})",
             "[REDACTED_IBAN]", _iban),
    Detector("cn_resident_id", rf"(?:^|[^\w.．]|{_EDGE})(?P<pii>\d{{17}}[\dXxＸｘ])(?:\b|{_EDGE})", "[REDACTED_ID]",
             _cn_resident_id),
    # digits after an IBAN's "DE89 " are its account number (an IBAN that failed its check), not a card
    Detector("credit_card", rf"(?P<iban>\b[A-Z]{{2}}\d{{2}})?(?:^|[^\w.．]|{_EDGE})(?P<pii>\d(?:[ \-－\u3000{_SPACES}]?\d){{12,18}})(?:\b|{_EDGE})",
             "[REDACTED_CREDIT_CARD]", _card),
    Detector("ipv6", rf"(?:^|[^\w:.]|{_EDGE})(?P<pii>\[?(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}[0-9A-Fa-f.]*(?:%[0-9A-Za-z]+)?\]?)",
             "[REDACTED_IP]", _ipv6),
    # the optional word before the edge alternation keeps Rust's regex from jumping to the dots (14x slower over a
    # column): ``needs`` scans for them first
    Detector("ipv4", rf"(?:(?P<word>\p{{L}}+)\.?[ \t]+)?(?:^|\b|{_EDGE})(?P<pii>\d+\.\d+\.\d+\.\d+)(?P<tail>\.\d)?(?:\b|{_EDGE})",
             "[REDACTED_IP]", _ipv4, needs=r"\d+\.\d+\.\d+\.\d+"),
    # a Latin letter or digit right after the number is captured (``glued``), so the validator can reject it
    Detector("phone", rf"(?:^|[^\w.+/\-．＋／－]|{_EDGE})(?P<pii>(?:[+＋]|%2[Bb]|\b[0０]{{2}})?[(（]?\d[\d \t\u3000{_SPACES}.\-()/－（）{_DASH}]{{5,24}}"
             rf"\d[)）]?)(?P<glued>[A-Za-z0-9_])?", "[REDACTED_PHONE]", _phone),
]
KINDS = [d.kind for d in DETECTORS]
BY_KIND = {d.kind: d for d in DETECTORS}


def redact(texts: pl.Series, kinds: list[str], phone_regions: tuple[str, ...] = PHONE_REGIONS
           ) -> tuple[pl.Series, dict[str, int]]:
    """``texts`` with every match of the enabled ``kinds`` replaced, and the number of matches per kind.
    ``phone_regions``: ISO region codes whose national phone formats are recognised."""
    unknown = [k for k in kinds if k not in BY_KIND]
    if unknown:
        raise ValueError(f"unknown PII kind(s) {unknown}; known: {KINDS}")
    counts: dict[str, int] = {}
    s = texts.cast(pl.String)
    for d in DETECTORS:
        if d.kind not in kinds:
            continue
        if d.validate is None:
            s, counts[d.kind] = replace_plain(s, d)
        else:
            validate = partial(_phone, regions=tuple(phone_regions)) if d.kind == "phone" else d.validate
            s, counts[d.kind] = replace_validated(s, d, validate)
    return s, counts


def find(texts: pl.Series, kinds: list[str], phone_regions: tuple[str, ...] = PHONE_REGIONS
         ) -> tuple[pl.Series, dict[str, int]]:
    """Per row, whether any enabled kind is present (after validation), and the matches per kind."""
    out, counts = redact(texts, kinds, phone_regions)
    return (out != texts.cast(pl.String)).fill_null(False), counts
