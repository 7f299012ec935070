"""Carry committed operation events to WebSocket clients (placeholder)."""


def on_event_created(event) -> None:
    """Called for every new OperationEvent inside the writer's transaction."""
