// Node's cluster module for bench/run.sh --anchors: node cluster.js N PORT.
// The primary forks N workers and forks a new one when one dies; SIGHUP
// replaces every worker new-before-old (the usual rolling reload: a new one
// listens, then an old one is disconnected, which lets it finish its
// connections); SIGTERM disconnects all and exits. Each worker is the
// smallest http server answering "200 ok", like bench/minimal_worker.c, and
// writes one byte to $BENCH_READY_FIFO once it listens.
'use strict';
const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');

const n = parseInt(process.argv[2], 10);
const port = parseInt(process.argv[3], 10);

if (cluster.isPrimary) {
  let stopping = false;
  const fork = () => cluster.fork();
  cluster.on('exit', (worker) => {
    if (!stopping && !worker.exitedAfterDisconnect) fork();
    if (stopping && Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  for (let i = 0; i < n; i++) fork();
  process.on('SIGHUP', () => {
    for (const old of Object.values(cluster.workers)) {
      const w = fork();
      w.once('listening', () => old.disconnect());
    }
  });
  process.on('SIGTERM', () => {
    stopping = true;
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
    for (const w of Object.values(cluster.workers)) w.disconnect();
  });
} else {
  http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
    res.end('ok\n');
  }).listen(port, '127.0.0.1', () => {
    const fifo = process.env.BENCH_READY_FIFO;
    if (fifo) {
      try {
        const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        fs.writeSync(fd, 'r');
        fs.closeSync(fd);
      } catch (e) { /* no reader: not a start measurement */ }
    }
  });
}
