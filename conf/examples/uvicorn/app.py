"""The smallest ASGI app, no framework: answers every request with the pid
that served it, and tells preforkd it is ready from the lifespan startup."""
import os

import preforkd

in_flight = 0                               # requests in hand (BUSY while > 0)


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
        await hello(send)


async def hello(send):
    global in_flight
    in_flight += 1
    if in_flight == 1:
        preforkd.busy(True)                 # from no request in hand to some
    try:
        body = b"hello from uvicorn pid %d\n" % os.getpid()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        preforkd.counter("requests")
    finally:
        in_flight -= 1
        if in_flight == 0:
            preforkd.busy(False)            # and back to none
