// preforkd.js: report to preforkd from a Node.js worker, and find its sockets.
// Standard library only; installed as /usr/share/preforkd/preforkd.js:
//
//   const preforkd = require('/usr/share/preforkd/preforkd.js');
//   const server = http.createServer(handler);
//   server.listen({ fd: preforkd.listenFds()[0].fd }, () => preforkd.ready());
//   process.on('SIGTERM', () => { preforkd.stopping(); server.close(); });
//
// Node has no Unix datagram socket in its core, so the functions write lines
// of the notify protocol (preforkd-worker(7)) to the pipe named by
// PREFORKD_NOTIFY_FD; NOTIFY_SOCKET alone (systemd) is not used. Run by
// anything but preforkd they do nothing and return false, so a worker runs
// unchanged outside preforkd. Telemetry never blocks: a line that does not fit
// into the pipe at once (EAGAIN), or that finds preforkd gone (EPIPE), is
// dropped and the function returns false.
'use strict';

const fs = require('fs');

const MAX_LINE = 4096;      // bytes per line, its newline included
const MAX_STATUS = 512;     // bytes of STATUS text preforkd keeps
const LISTEN_FDS_START = 3;
const NAME = /^[a-z0-9_]{1,48}$/;

let pipeFd;                 // undefined: not checked yet; -1: none
const totals = new Map();   // counter name -> BigInt total of this process

function notifyFd() {
  if (pipeFd === undefined) {
    pipeFd = -1;
    const value = process.env.PREFORKD_NOTIFY_FD || '';
    if (/^[0-9]+$/.test(value)) {
      try {
        fs.fstatSync(Number(value));
        pipeFd = Number(value);
      } catch (e) { /* not open: not run by preforkd */ }
    }
  }
  return pipeFd;
}

// True when run by preforkd (there is a notify pipe to write to).
function enabled() {
  return notifyFd() >= 0;
}

// Sends protocol lines ("KEY=VALUE", no newline) as they are, each in one
// write (atomic). True when every line was handed over.
function notify(...lines) {
  const data = lines.map((line) => {
    const raw = Buffer.from(String(line) + '\n');
    if (String(line).includes('\n') || raw.length > MAX_LINE)
      throw new RangeError(`a notify line is one line of at most ${MAX_LINE - 1} bytes`);
    return raw;
  });
  const fd = notifyFd();
  if (fd < 0) return false;
  let ok = true;
  for (const raw of data) {
    try {
      if (fs.writeSync(fd, raw) !== raw.length) ok = false;
    } catch (e) {           // EAGAIN (pipe full), EPIPE (preforkd gone), ...
      ok = false;
    }
  }
  return ok;
}

function checkName(name) {
  if (typeof name !== 'string' || !NAME.test(name))
    throw new RangeError(`a counter or gauge name is 1 to 48 of a-z, 0-9 and _: ${JSON.stringify(name)}`);
}

// READY=1: the worker can serve (programs with `ready: notify`).
const ready = () => notify('READY=1');
// STOPPING=1: the worker drains and no longer accepts.
const stopping = () => notify('STOPPING=1');
// WATCHDOG=1: the heartbeat, at least every third of watchdogUsec().
const watchdog = () => notify('WATCHDOG=1');

// The program's watchdog_timeout in microseconds, 0 without one.
function watchdogUsec() {
  const value = process.env.WATCHDOG_USEC || '';
  return /^[0-9]+$/.test(value) ? Number(value) : 0;
}

// STATUS=text, shown by `preforkctl status` (one line, 512 bytes kept).
function status(text) {
  let raw = Buffer.from(String(text).split(/\r?\n/).join(' '));
  if (raw.length > MAX_STATUS) raw = Buffer.from(raw.subarray(0, MAX_STATUS).toString().replace(/\uFFFD+$/, ''));
  return notify('STATUS=' + raw.toString());
}

// Adds delta (an integer >= 0, default 1) to this process's counter `name`
// and reports the total: the protocol's counters are cumulative per worker.
function counter(name, delta = 1) {
  checkName(name);
  if (!Number.isInteger(delta) && typeof delta !== 'bigint') throw new RangeError('a counter delta is an integer');
  const d = BigInt(delta);
  if (d < 0n) throw new RangeError('a counter only grows: delta must be >= 0');
  let total = (totals.get(name) || 0n) + d;
  const max = (1n << 64n) - 1n;
  if (total > max) total = max;
  totals.set(name, total);
  return notify(`COUNTER_${name}=${total}`);
}

// Reports the current value (a signed 64-bit integer) of gauge `name`.
function gauge(name, value) {
  checkName(name);
  if (!Number.isInteger(value) && typeof value !== 'bigint') throw new RangeError('a gauge is an integer');
  const v = BigInt(value);
  if (v < -(1n << 63n) || v >= (1n << 63n)) throw new RangeError('a gauge is a signed 64-bit integer');
  return notify(`GAUGE_${name}=${v}`);
}

// BUSY=1 when a request starts, BUSY=0 (busy(false)) when it ends.
const busy = (flag = true) => notify(flag ? 'BUSY=1' : 'BUSY=0');

// The inherited listening sockets: [{fd: 3, name: 'web'}, ...], [] when none
// were passed to this process. Use them with server.listen({fd}).
function listenFds() {
  if ((process.env.LISTEN_PID || '') !== String(process.pid)) return [];
  const value = process.env.LISTEN_FDS || '';
  const n = /^[0-9]+$/.test(value) ? Number(value) : 0;
  const names = (process.env.LISTEN_FDNAMES || '').split(':');
  const fds = [];
  for (let i = 0; i < n; i++) fds.push({ fd: LISTEN_FDS_START + i, name: names[i] || 'unknown' });
  return fds;
}

module.exports = {
  enabled, notify, ready, stopping, watchdog, heartbeat: watchdog, watchdogUsec,
  status, counter, gauge, busy, listenFds,
};
