"""The smallest ASGI app, no framework: answers every request with the pid
that served it, and tells preforkd it is ready from the lifespan startup."""
import os

import preforkd


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                preforkd.ready()            # uvicorn serves right after this
            elif message["type"] == "lifespan.shutdown":
                preforkd.stopping()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        preforkd.busy(True)
        body = b"hello from uvicorn pid %d\n" % os.getpid()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        preforkd.counter("requests")
        preforkd.busy(False)
