// A worker that reports only through the Node helper library (lib/node),
// whose path is in LIB_TEST_NODE_MODULE. On start: GAUGE connections=7, COUNTER
// requests +3 then +2 (so 5), BUSY=1, STATUS "node lib: <socket names>",
// then READY=1 once every socket listens. Each socket answers every
// connection with its name (from LISTEN_FDNAMES). SIGTERM: close, exit 0.
'use strict';
const net = require('net');
const preforkd = require(process.env.LIB_TEST_NODE_MODULE);

const fds = preforkd.listenFds();
const servers = fds.map(({ fd, name }) => net.createServer((c) => c.end(name + '\n')));
let listening = 0;
servers.forEach((server, i) => server.listen({ fd: fds[i].fd }, () => {
  if (++listening < servers.length) return;
  const ok = [preforkd.gauge('connections', 7), preforkd.counter('requests', 3), preforkd.counter('requests', 2),
    preforkd.busy(true), preforkd.status('node lib: ' + fds.map((f) => f.name).join(',')), preforkd.ready()];
  if (!ok.every(Boolean)) {
    console.error('a report failed: ' + JSON.stringify(ok));
    process.exit(1);
  }
}));
process.on('SIGTERM', () => {
  preforkd.stopping();
  servers.forEach((s) => s.close());
  process.exit(0);
});
