// The Node peer of bench_relay: one connection relayed with
// stream.pipeline(..., {signal}) to 127.0.0.1:<argv[2]>. Prints the port it
// listens on, relays one connection, then exits.
'use strict';
const net = require('net');
const { pipeline } = require('stream/promises');

const target = Number(process.argv[2]);
const ac = new AbortController();
const server = net.createServer((a) => {
  server.close();
  const b = net.connect(target, '127.0.0.1');
  pipeline(a, b, { signal: ac.signal }).catch((err) => {
    console.error('relay.js:', err.message);
    process.exitCode = 1;
    a.destroy();
    b.destroy();
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(server.address().port + '\n');
});
