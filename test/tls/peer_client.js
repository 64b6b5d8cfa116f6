// A TLS echo client for the peer tests (Node's tls): sends LEN patterned
// bytes, reads them back, checks them, ends with close_notify.
// Usage: node peer_client.js PORT CAFILE VERSION(1.2|1.3) LEN INFILE
'use strict';
const tls = require('tls');
const fs = require('fs');
const [port, cafile, version, lenStr, infile] = process.argv.slice(2);
const len = Number(lenStr);
const data = fs.readFileSync(infile).subarray(0, len);
const v = version === '1.3' ? 'TLSv1.3' : 'TLSv1.2';
const chunks = [];
let got = 0;
const s = tls.connect({
  host: '127.0.0.1', port: Number(port), ca: fs.readFileSync(cafile),
  servername: 'localhost', minVersion: v, maxVersion: v,
}, () => { s.write(data); });
s.on('data', (d) => { chunks.push(d); got += d.length; });
s.on('end', () => {
  const all = Buffer.concat(chunks);
  if (!all.equals(data)) {
    console.error(`node: echo mismatch: ${all.length} bytes`);
    process.exit(2);
  }
  s.end();
  console.log(`node: ok ${s.getProtocol()} ${got}`);
});
s.on('error', (e) => { console.error(`node: ${e.message}`); process.exit(3); });
setTimeout(() => { console.error('node: timeout'); process.exit(4); }, 20000)
  .unref();
