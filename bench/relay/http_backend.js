// http_backend.js: the HTTP upstream of bench/relay/slowread.sh. Serves a
// BODY-byte response (default 1 MiB of zeros) to every GET, keep-alive,
// on 127.0.0.1 (port 0: it prints "port N" first). Node's http module
// holds thousands of slow connections on one thread, which is what the
// slow-read attack needs from the upstream.
'use strict';
const http = require('http');
const size = parseInt(process.argv[2] || '1048576', 10);
const body = Buffer.alloc(size);
const server = http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'application/octet-stream',
                      'Content-Length': size});
  res.end(body);
});
server.keepAliveTimeout = 600000;
server.headersTimeout = 600000;
server.requestTimeout = 0;
server.maxConnections = 100000;
server.listen(0, '127.0.0.1', () => {
  console.log('port ' + server.address().port);
});
