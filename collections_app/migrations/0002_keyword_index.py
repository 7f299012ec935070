"""The keyword index over chunk text: FTS5 on SQLite, a GIN index on PostgreSQL."""

from django.db import migrations

SQLITE_FORWARD = [
    """CREATE VIRTUAL TABLE collections_app_chunk_fts USING fts5(
        text, content='collections_app_chunk', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER collections_app_chunk_ai AFTER INSERT ON collections_app_chunk BEGIN
        INSERT INTO collections_app_chunk_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER collections_app_chunk_ad AFTER DELETE ON collections_app_chunk BEGIN
        INSERT INTO collections_app_chunk_fts(collections_app_chunk_fts, rowid, text)
        VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER collections_app_chunk_au AFTER UPDATE OF text ON collections_app_chunk BEGIN
        INSERT INTO collections_app_chunk_fts(collections_app_chunk_fts, rowid, text)
        VALUES ('delete', old.id, old.text);
        INSERT INTO collections_app_chunk_fts(rowid, text) VALUES (new.id, new.text);
    END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS collections_app_chunk_au",
    "DROP TRIGGER IF EXISTS collections_app_chunk_ad",
    "DROP TRIGGER IF EXISTS collections_app_chunk_ai",
    "DROP TABLE IF EXISTS collections_app_chunk_fts",
]
POSTGRES_FORWARD = [
    "CREATE INDEX collections_app_chunk_tsv ON collections_app_chunk "
    "USING GIN (to_tsvector('english', text))",
]
POSTGRES_BACKWARD = ["DROP INDEX IF EXISTS collections_app_chunk_tsv"]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("collections_app", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        )
    ]
