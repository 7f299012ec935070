"""`manage.py collections`: list collections and change them from the shell.

Each change goes through the same service function as the web page and
prints the operation it queued; --wait follows it to its end.
"""

from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandParser

from collections_app import services
from collections_app.cli import (
    QuarryCommand,
    add_json_option,
    add_owner_option,
    add_wait_option,
    find_collection,
)
from collections_app.models import Collection

Handler = Callable[[AbstractBaseUser, dict], int]


class Command(QuarryCommand):
    help = "List, create, change and delete collections."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(
            title="subcommands", dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        self.add_list(subcommands)
        self.add_create(subcommands)
        self.add_change(
            subcommands, "add-source", self.add_source, "add a folder and index it"
        ).add_argument("directory", metavar="DIR")
        self.add_change(
            subcommands,
            "remove-source",
            self.remove_source,
            "forget a folder's documents",
        ).add_argument("directory", metavar="DIR")
        self.add_change(subcommands, "reindex", self.reindex, "index every file again")
        self.add_change(subcommands, "delete", self.delete, "delete a collection")

    def add_list(self, subcommands) -> None:
        sub = subcommands.add_parser("list", help="list the owner's collections")
        add_owner_option(sub)
        add_json_option(sub)
        sub.set_defaults(handler=self.list_collections)

    def add_create(self, subcommands) -> None:
        sub = self.add_change(
            subcommands,
            "create",
            self.create,
            "create a collection and index its folder",
        )
        sub.add_argument("--source", metavar="DIR", required=True)
        sub.add_argument("--description", default="")
        sub.add_argument("--chunk-size", type=int, metavar="N")
        sub.add_argument("--chunk-overlap", type=int, metavar="N")

    def add_change(
        self, subcommands, name: str, handler: Handler, help_text: str
    ) -> CommandParser:
        sub = subcommands.add_parser(name, help=help_text)
        sub.add_argument("name", metavar="NAME")
        add_owner_option(sub)
        add_wait_option(sub)
        add_json_option(sub)
        sub.set_defaults(handler=handler)
        return sub

    def list_collections(self, owner: AbstractBaseUser, options: dict) -> int:
        collections = list(
            Collection.objects.filter(owner=owner)
            .select_related("owner")
            .prefetch_related("sources")
        )
        if options["json"]:
            self.print_json([collection_to_dict(c) for c in collections])
            return 0
        if not collections:
            self.stdout.write(f"User '{owner.get_username()}' has no collections.")
        for collection in collections:
            self.write_collection(collection)
        return 0

    def write_collection(self, collection: Collection) -> None:
        self.stdout.write(
            f"{collection.name}  {collection.status}  "
            f"{collection.document_count} documents, {collection.chunk_count} chunks, "
            f"{collection.failed_count} failed"
        )
        for source in collection.sources.all():
            self.stdout.write(f"  {source.path}")

    def create(self, owner: AbstractBaseUser, options: dict) -> int:
        operation = services.create_collection(
            self.request(owner),
            name=options["name"],
            source=options["source"],
            description=options["description"],
            chunk_size=options["chunk_size"],
            chunk_overlap=options["chunk_overlap"],
        )
        return self.report(operation, options)

    def add_source(self, owner: AbstractBaseUser, options: dict) -> int:
        collection = find_collection(owner, options["name"])
        operation = services.add_source(
            self.request(owner), collection, options["directory"]
        )
        return self.report(operation, options)

    def remove_source(self, owner: AbstractBaseUser, options: dict) -> int:
        collection = find_collection(owner, options["name"])
        source = services.find_source(collection, options["directory"])
        operation = services.remove_source(self.request(owner), collection, source)
        return self.report(operation, options)

    def reindex(self, owner: AbstractBaseUser, options: dict) -> int:
        collection = find_collection(owner, options["name"])
        operation = services.reindex(self.request(owner), collection)
        return self.report(operation, options)

    def delete(self, owner: AbstractBaseUser, options: dict) -> int:
        collection = find_collection(owner, options["name"])
        operation = services.delete_collection(self.request(owner), collection)
        return self.report(operation, options)


def collection_to_dict(collection: Collection) -> dict:
    return {
        "id": str(collection.id),
        "name": collection.name,
        "description": collection.description,
        "owner": collection.owner.get_username(),
        "status": collection.status,
        "status_message": collection.status_message,
        "sources": [source.path for source in collection.sources.all()],
        "documents": collection.document_count,
        "chunks": collection.chunk_count,
        "failed": collection.failed_count,
        "embedding_model": collection.embedding_model,
        "chunk_size": collection.chunk_size,
        "chunk_overlap": collection.chunk_overlap,
        "created_at": collection.created_at.isoformat(),
        "updated_at": collection.updated_at.isoformat(),
    }
