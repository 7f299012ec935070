"""The real path: a `manage.py qcluster` process runs what the services queue."""

import pytest

from collections_app import search, services
from collections_app.models import Chunk, Collection
from operations.models import Operation
from tests.conftest import wait_for, write_files

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_until_ended(operation: Operation, timeout: float = 90) -> Operation:
    def ended():
        operation.refresh_from_db()
        return operation.status in Operation.TERMINAL

    wait_for(ended, timeout=timeout)
    return operation


def test_a_real_worker_creates_indexes_searches_and_deletes(
    worker, as_owner, owner, tmp_path
):
    folder = write_files(
        tmp_path / "library",
        {
            "kettles.txt": "Descale the kettle with vinegar and rinse it twice.",
            "bikes.md": "# Bicycles\n\nOil the chain after riding in the rain.",
        },
    )
    operation = services.create_collection(
        as_owner, name="Household", source=str(folder)
    )
    assert Operation.objects.get(id=operation.id).status == Operation.Status.PENDING

    wait_until_ended(operation)
    assert operation.status == Operation.Status.COMPLETED, worker.output()
    assert (operation.indexed, operation.chunks) == (2, 2)
    assert list(operation.events.values_list("kind", flat=True))[:2] == [
        "requested",
        "started",
    ]

    results = search.search(owner, "how to clean limescale from a kettle")
    assert results[0].document == "kettles.txt"

    collection = Collection.objects.get()
    deletion = wait_until_ended(services.delete_collection(as_owner, collection))
    assert deletion.status == Operation.Status.COMPLETED, worker.output()
    assert not Collection.objects.exists() and not Chunk.objects.exists()
    assert "Traceback" not in worker.output()
    assert " ERROR " not in worker.output() and " WARNING " not in worker.output()
