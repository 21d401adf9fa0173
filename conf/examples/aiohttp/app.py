"""The smallest aiohttp app for preforkd: answers every request with the pid
that served it."""
import asyncio
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
    # aiohttp has stopped accepting by now (on TERM, the site closes its
    # socket first, then runs this, then closes the connections that have no
    # request in progress). A connection accepted just before TERM may not
    # have had its request read yet, and would be closed unanswered: give it
    # a moment. New connections go to the other workers meanwhile.
    preforkd.stopping()
    await asyncio.sleep(0.5)


sockets = preforkd.listen_sockets()
if not sockets:
    raise SystemExit("no listening socket: run me under preforkd")
app = web.Application()
app.router.add_get("/{path:.*}", hello)   # every path
app.on_startup.append(on_startup)
app.on_shutdown.append(on_shutdown)
web.run_app(app, sock=sockets[0], shutdown_timeout=5, print=None, access_log=None)
