"""Runs an ASGI app (default app:app) with uvicorn on the socket preforkd
passes as fd 3, like `python3 -m uvicorn --fd 3 --no-access-log app:app`,
with one change to uvicorn's graceful stop on TERM (see shutdown below)."""
import asyncio
import sys

import uvicorn


class Server(uvicorn.Server):
    async def shutdown(self, sockets=None):
        # uvicorn's own shutdown stops accepting and, at once, closes every
        # connection whose request it has not read yet: one accepted a moment
        # before TERM is closed unanswered (a reset for its client). So stop
        # accepting first and give such connections a moment to be read and
        # answered; new connections go to the other workers meanwhile (they
        # share the socket). Then uvicorn's shutdown as usual.
        for server in self.servers:
            server.close()
        await asyncio.sleep(0.5)
        await super().shutdown(sockets=sockets)


if __name__ == "__main__":
    app = sys.argv[1] if len(sys.argv) > 1 else "app:app"
    Server(uvicorn.Config(app, fd=3, access_log=False)).run()
