"""Live operation events for the signed-in user (placeholder until the relay lands)."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class OperationsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.accept()
