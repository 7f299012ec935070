"""Make any audit details storable on SQLite and PostgreSQL, and read them back.

The rule, applied recursively to keys and values (see README, "Audit trail"):

1. A string that PostgreSQL's jsonb refuses (it holds NUL or a lone
   surrogate) or that starts with TAG is stored as TAG + "b64:" + the base64
   of its UTF-8 bytes, surrogates passed through. Every other string is stored
   as it is, so the details stay readable and searchable in the database.
2. A float that PostgreSQL would not give back as the same float (NaN,
   infinities, -0.0, or one Python writes with an exponent, which jsonb turns
   into an integer) is stored as TAG + "float:" + its repr.
3. Anything else that JSON has no type for becomes text: bytes as a file name
   would be (`os.fsdecode`), dates in ISO 8601, other objects by `str()`;
   keys become text too. Tuples and sets become lists. PostgreSQL does not
   keep the order of an object's keys.
4. Values under keys that look secret (password, secret, token, API key,
   credential, ..., also run together as in `adminpassword` or `DBPassword`)
   become REDACTED, whatever they hold.
5. Bounds: a string keeps at most MAX_STRING characters, a key MAX_KEY, a list
   or object MAX_ITEMS items, the whole entry MAX_TOTAL characters of text, and
   nesting MAX_DEPTH levels; integers beyond MAX_INT_BITS bits become a note.
   Whatever is cut is replaced by a note that says how much was cut.
   Rules 3, 4 and 5 are the only changes `decode` cannot undo.

TAG is U+FDD0, a Unicode noncharacter that real text does not use, so only
the strings that need it are encoded; a string starting with TAG is always an
encoded value. `decode` reverses rules 1 and 2 exactly.
"""

import base64
import binascii
import datetime
import json
import math
import os
from typing import Any

TAG = "\ufdd0"
STRING_TAG = TAG + "b64:"
FLOAT_TAG = TAG + "float:"
MAX_STRING = 8192
MAX_KEY = 1024
MAX_ITEMS = 1000
MAX_TOTAL = 256 * 1024
MAX_DEPTH = 20
MAX_INT_BITS = 8192
REDACTED = "[redacted]"
TOO_DEEP = "[cut: nested too deep]"

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "secret",
        "secrets",
        "token",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "privatekey",
        "accesskey",
        "secretkey",
        "apitoken",
        "auth",
        "bearer",
        "sessionid",
    }
)
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("private", "key"),
        ("access", "key"),
        ("secret", "key"),
        ("session", "key"),
        ("session", "id"),
        ("ssl", "key"),
    }
)
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "accesskey",
    "sslkey",
    "sessionid",
)
# Lone surrogates cannot be encoded as UTF-8, so the database never gets them.
_SURROGATES = range(0xD800, 0xE000)


def key_words(key: str) -> list[str]:
    """The lower-case words of a key: `dbPassword`, `db_password`, `DBPassword`."""
    words: list[str] = []
    current = ""
    for char in key:
        if not char.isalnum():
            if current:
                words.append(current)
            current = ""
        elif char.isupper() and current[-1:].islower():
            words.append(current)
            current = char
        elif char.islower() and len(current) > 1 and current[-2:].isupper():
            # An acronym ends where a capitalised word begins: DB|Password.
            words.append(current[:-1])
            current = current[-1] + char
        else:
            current += char
    if current:
        words.append(current)
    return [word.lower() for word in words]


def is_secret_key(key: str) -> bool:
    words = key_words(key)
    if any(word in _SECRET_WORDS for word in words):
        return True
    if any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False)):
        return True
    # Words run together (`adminpassword`, `sslkey`) have no boundary to split on.
    letters = "".join(words)
    if any(part in letters for part in _SECRET_PARTS):
        return True
    # "token" also starts ordinary words (tokenizer, tokens), so only as the end.
    return letters.endswith("token")


def needs_encoding(text: str) -> bool:
    """True for text jsonb refuses, and for text that would read as encoded."""
    if text.startswith(TAG) or "\x00" in text:
        return True
    if text.isascii():
        return False
    return any(ord(char) in _SURROGATES for char in text)


def encode_text(text: str) -> str:
    """One string as stored (rule 1), without any length bound."""
    if not needs_encoding(text):
        return text
    raw = text.encode("utf-8", "surrogatepass")
    return STRING_TAG + base64.b64encode(raw).decode("ascii")


def decode_text(text: str) -> str | float:
    """The value one stored string stands for (rules 1 and 2 reversed)."""
    if not text.startswith(TAG):
        return text
    try:
        if text.startswith(STRING_TAG):
            raw = base64.b64decode(text[len(STRING_TAG) :], validate=True)
            return raw.decode("utf-8", "surrogatepass")
        if text.startswith(FLOAT_TAG):
            return float(text[len(FLOAT_TAG) :])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    # Not written by `encode` (a hand-made row): show it as it is stored.
    return text


def cut_note(text: str, limit: int) -> str:
    """Text bounded to `limit` characters, ending with what was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut {len(text) - limit} of {len(text)} characters]"


def _plain_float(value: float) -> bool:
    """True when jsonb gives this float back unchanged as a JSON number."""
    if not math.isfinite(value):
        return False
    if value == 0 and math.copysign(1.0, value) < 0:
        return False
    return "e" not in repr(value)


class _Encoder:
    """One pass over a details value, sharing the entry's text budget."""

    def __init__(self) -> None:
        self.budget = MAX_TOTAL

    def text(self, value: str, limit: int = MAX_STRING) -> str:
        bounded = cut_note(value, max(0, min(limit, self.budget)))
        self.budget = max(0, self.budget - len(bounded))
        return encode_text(bounded)

    def value(self, value: Any, depth: int) -> Any:
        # Every value costs at least one unit, so empty containers are bounded too.
        self.budget = max(0, self.budget - 1)
        if isinstance(value, str):
            return self.text(str.__str__(value))
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                return f"[cut: an integer of {value.bit_length()} bits]"
            return int(value)
        if isinstance(value, float):
            if _plain_float(value):
                return float(value)
            return FLOAT_TAG + repr(float(value))
        if isinstance(value, dict):
            return self.mapping(value, depth)
        if isinstance(value, (list, tuple, set, frozenset)):
            return self.sequence(list(value), depth)
        return self.text(_as_text(value))

    def mapping(self, value: dict, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        stored: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index == MAX_ITEMS or not self.budget:
                stored[
                    self._unique(stored, f"[cut: {len(value) - index} more keys]")
                ] = None
                break
            name = key if isinstance(key, str) else _as_text(key)
            stored_key = self._unique(stored, self.text(name, MAX_KEY))
            if is_secret_key(name):
                stored[stored_key] = REDACTED
            else:
                stored[stored_key] = self.value(item, depth + 1)
        return stored

    def sequence(self, value: list, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        stored = []
        for index, item in enumerate(value):
            if index == MAX_ITEMS or not self.budget:
                stored.append(f"[cut: {len(value) - index} more items]")
                break
            stored.append(self.value(item, depth + 1))
        return stored

    @staticmethod
    def _unique(stored: dict, key: str) -> str:
        """Keys cut to the same text must not overwrite each other."""
        candidate, number = key, 1
        while candidate in stored:
            number += 1
            candidate = encode_text(f"{decode_text(key)} #{number}")
        return candidate


def _as_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return os.fsdecode(bytes(value))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fsdecode(os.fspath(value))
    return str(value)


def encode(details: Any) -> Any:
    """Details as stored: JSON that both databases accept, bounded and redacted."""
    return _Encoder().value(details, 0)


def decode(stored: Any) -> Any:
    """The details as they were written (apart from what `encode` had to cut)."""
    if isinstance(stored, str):
        return decode_text(stored)
    if isinstance(stored, dict):
        return {_decode_key(key): decode(value) for key, value in stored.items()}
    if isinstance(stored, list):
        return [decode(value) for value in stored]
    return stored


def _decode_key(key: str) -> str:
    value = decode_text(key)
    return value if isinstance(value, str) else key


_DISPLAY_ESCAPES = {code: f"\\u{code:04x}" for code in _SURROGATES}
# Bidirectional controls could reorder the text around them on a page, and
# noncharacters (the tag among them) are invisible.
_DISPLAY_ESCAPES.update(
    {
        code: f"\\u{code:04x}"
        for code in (
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
            0x200E,
            0x200F,
            *range(0xFDD0, 0xFDF0),
            0xFFFE,
            0xFFFF,
        )
    }
)
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _strict_json(value: Any) -> Any:
    """Non-finite floats as the strings "NaN", "Infinity" and "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return value


def display_json(value: Any, indent: int | None = 2) -> str:
    """Decoded details as strict JSON text that any page or terminal can show.

    Non-ASCII text stays readable. Lone surrogates (which no page encoding can
    carry), bidirectional controls and noncharacters are written as JSON
    escapes, so the text still parses back to exactly the same strings.
    Non-finite floats, which JSON has no literal for, are shown as strings.
    """
    text = json.dumps(_strict_json(value), indent=indent, ensure_ascii=False)
    return text.translate(_DISPLAY_ESCAPES)
