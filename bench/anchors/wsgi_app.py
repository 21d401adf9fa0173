# The smallest WSGI app: what gunicorn's sync workers run in bench/run.sh
# --anchors (gunicorn cannot run the C worker). A fixed "200 ok", like
# bench/minimal_worker.c.
BODY = b"ok\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "3")]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
