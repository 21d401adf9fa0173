# gunicorn settings for bench/run.sh --anchors: sync workers (the default),
# and one byte to $BENCH_READY_FIFO when a worker has initialised (it accepts
# from then on), like bench/minimal_worker.c does.
import os

worker_class = "sync"
accesslog = None
graceful_timeout = 10


def post_worker_init(worker):
    fifo = os.environ.get("BENCH_READY_FIFO")
    if fifo:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"r")
            os.close(fd)
        except OSError:
            pass
