"""Text as the database stores it, the same on SQLite and PostgreSQL.

The rule: NUL (U+0000), which PostgreSQL cannot hold in a text or jsonb value,
never reaches a column. Extracted text, error messages and messages in events
have it removed; names and paths a user types are refused when they hold one;
search queries have it replaced by a space; audit details encode it
reversibly (audit.encoding). Lone surrogates, which no UTF-8 column accepts,
become U+FFFD.
"""


def storable_text(text: str) -> str:
    """`text` with NUL removed and lone surrogates replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
