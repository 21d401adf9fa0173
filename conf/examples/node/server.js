// The smallest Node.js HTTP server for preforkd: answers every request with
// the pid that served it.
'use strict';
const http = require('http');
const preforkd = require('/usr/share/preforkd/preforkd.js');

let inFlight = 0; // requests in hand: BUSY=1 from none to some, BUSY=0 back to none
const server = http.createServer((req, res) => {
  if (++inFlight === 1) preforkd.busy(true);
  const body = `hello from node pid ${process.pid}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.on('close', () => { // sent, or the client went away
    preforkd.counter('requests');
    if (--inFlight === 0) preforkd.busy(false);
  });
  res.end(body);
});

const [socket] = preforkd.listenFds();
if (!socket) {
  console.error('no listening socket: run me under preforkd');
  process.exit(2);
}
server.listen({ fd: socket.fd }, () => preforkd.ready());

// Without this, TERM kills Node at once and cuts the requests in flight.
process.on('SIGTERM', () => {
  preforkd.stopping();
  server.close(() => process.exit(0)); // stops accepting, waits for the requests in flight
  server.closeIdleConnections();       // idle keep-alive connections close now
});
