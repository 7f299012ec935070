"""An index that answers "which collection holds chunk N" without reading the chunk.

The SQLite word search joins FTS5 matches to their chunks only to filter by
collection; through the chunk table that read each match's text and vector.
PostgreSQL filters inside its GIN index scan and needs nothing.
"""

from django.db import migrations

INDEX = "collections_app_chunk_id_collection"


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} "
            "ON collections_app_chunk (id, collection_id)"
        )


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("collections_app", "0002_keyword_index")]

    operations = [migrations.RunPython(forward, backward)]
