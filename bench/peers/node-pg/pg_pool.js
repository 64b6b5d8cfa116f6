// The node-postgres peer of bench/bench_pg.c: the same workload through
// pg.Pool (pure JavaScript): `requesters` concurrent loops share a pool of
// `max` connections until `total` queries have run, for SELECT 1 and for a
// one-parameter SELECT; medians of `rounds` rounds, in queries/s.
//
//   node pg_pool.js HOST PORT USER DB MAX REQUESTERS TOTAL ROUNDS
//
// Prints `select1_qps=X select_param_qps=Y`. Loopback only.
'use strict';
const { Pool } = require('pg');

async function round(pool, requesters, total, text, params) {
  let issued = 0;
  const t0 = process.hrtime.bigint();
  async function loop(id) {
    while (issued < total) {
      issued++;
      const r = await pool.query(text, params ? [id] : undefined);
      if (r.rows.length !== 1) throw new Error('unexpected result');
    }
  }
  const loops = [];
  for (let i = 0; i < requesters; i++) loops.push(loop(i));
  await Promise.all(loops);
  const ns = Number(process.hrtime.bigint() - t0);
  return total / (ns / 1e9);
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const [host, port, user, database, max, requesters, total, rounds] =
      process.argv.slice(2);
  const pool = new Pool({ host, port: +port, user, database, max: +max });
  const one = [], param = [];
  // Warm: open every connection first.
  await round(pool, +requesters, +max * 4, 'SELECT 1', false);
  for (let i = 0; i < +rounds; i++) {
    one.push(await round(pool, +requesters, +total, 'SELECT 1', false));
    param.push(await round(pool, +requesters, +total, 'SELECT $1::int', true));
  }
  await pool.end();
  console.log(`select1_qps=${median(one).toFixed(0)} ` +
              `select_param_qps=${median(param).toFixed(0)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
