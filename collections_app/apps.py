from django.apps import AppConfig


class CollectionsConfig(AppConfig):
    name = "collections_app"
    label = "collections_app"
    verbose_name = "Collections"

    def ready(self) -> None:
        from webui import sqlite

        sqlite.connect()
