"""The smallest aiohttp app for preforkd: answers every request with the pid
that served it."""
import os

from aiohttp import web

import preforkd


async def hello(request):
    preforkd.busy(True)
    try:
        return web.Response(text="hello from aiohttp pid %d\n" % os.getpid())
    finally:
        preforkd.counter("requests")
        preforkd.busy(False)


async def on_startup(app):
    preforkd.ready()        # the socket listens already; serving starts now


async def on_shutdown(app):
    preforkd.stopping()


sockets = preforkd.listen_sockets()
if not sockets:
    raise SystemExit("no listening socket: run me under preforkd")
app = web.Application()
app.router.add_get("/{path:.*}", hello)   # every path
app.on_startup.append(on_startup)
app.on_shutdown.append(on_shutdown)
web.run_app(app, sock=sockets[0], shutdown_timeout=5, print=None, access_log=None)
