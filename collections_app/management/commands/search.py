"""`manage.py search "QUERY"`: the web page's hybrid search, from the shell."""

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandParser

from collections_app.cli import (
    Exit,
    QuarryCommand,
    add_json_option,
    add_owner_option,
    find_collection,
    positive_int,
)
from collections_app.search import Result, clean_query, search

PASSAGE_CHARS = 240


class Command(QuarryCommand):
    help = "Search collections by meaning and by words."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", metavar="QUERY")
        parser.add_argument(
            "--collection", metavar="NAME", help="search only this collection"
        )
        parser.add_argument(
            "--limit",
            type=positive_int,
            default=10,
            metavar="K",
            help="at most K results",
        )
        add_owner_option(parser)
        add_json_option(parser)
        parser.set_defaults(handler=self.search)

    def search(self, owner: AbstractBaseUser, options: dict) -> int:
        if not clean_query(options["query"]).strip():
            raise Exit(2, "Enter a query: words or a question to look for.")
        collection = None
        if options["collection"] is not None:
            collection = find_collection(owner, options["collection"])
        results = search(
            owner,
            options["query"],
            collection=collection,
            limit=options["limit"],
            via="cli",
        )
        if options["json"]:
            self.print_json([result.to_dict() for result in results])
            return 0
        if not results:
            self.stdout.write("No results.")
        for rank, result in enumerate(results, start=1):
            self.write_result(rank, result)
        return 0

    def write_result(self, rank: int, result: Result) -> None:
        self.stdout.write(
            f"{rank}. {result.document}  "
            f"(collection {result.collection}, score {result.score:.4f})"
        )
        self.stdout.write(f"   in {result.source}")
        self.stdout.write(f"   {shorten(result.passage, PASSAGE_CHARS)}")


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters, cut at a space when one is near.

    textwrap.shorten is not used: it drops the whole of a long run without
    spaces, which is how Chinese and Japanese text reads.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 3 // 4:
        cut = cut[:space]
    return cut + "…"
