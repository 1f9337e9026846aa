"""An upstream for the Windows half that counts what reaches it and passes it to the stand-in."""

import socket
from pathlib import Path

import trio

__all__ = ["CountingUpstream"]


class CountingUpstream:
    """Listens on `listen` (where the Windows half's --upstream points), counts connections
    and the bytes they bring, and passes both directions to the LocalAPI stand-in at
    `standin`."""

    def __init__(self, listen: Path, standin: Path) -> None:
        self.listen = listen
        self.standin = standin
        self.accepted = 0
        self.received = bytearray()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(self.listen))
        sock.listen(128)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._forward, [trio.SocketListener(sock)])
            task_status.started()

    async def _forward(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client, await trio.open_unix_socket(str(self.standin)) as standin:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, count: bool) -> None:
                try:
                    while chunk := await src.receive_some(65536):
                        if count:
                            self.received += chunk
                        await dst.send_all(chunk)
                    await dst.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, standin, True)
                nursery.start_soon(pump, standin, client, False)
