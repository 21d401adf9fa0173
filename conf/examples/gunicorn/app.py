"""The smallest WSGI app: answers every request with the pid that served it."""
import os


def app(environ, start_response):
    body = b"hello from gunicorn pid %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
