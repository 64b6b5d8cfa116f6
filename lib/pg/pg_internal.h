/* What the pg pool (pg_pool.c) needs of a connection (pg.c): its pool head
 * and the hook that says when a cancelled query's drain is over. */
#ifndef UVCTX_PG_INTERNAL_H
#define UVCTX_PG_INTERNAL_H

#include "uvctx/pg.h"

/* The generic pool's head embedded in every connection, and back. */
uvctx_pool_conn_t* uvctx__pg_conn_head(uvctx_pg_conn_t* conn);
uvctx_pg_conn_t* uvctx__pg_conn_of(uvctx_pool_conn_t* c);

/* Reads what the server may have sent an idle connection (without
 * blocking) and returns 1 if the connection is broken, else 0. */
int uvctx__pg_conn_probe(uvctx_pg_conn_t* conn);

/* Returns 1 if a cancelled query is still draining: cb(conn, arg) then runs
 * once from the loop when the drain is over (the connection may have
 * broken; see uvctx_pg_conn_broken()). Returns 0 otherwise. */
int uvctx__pg_conn_when_ready(uvctx_pg_conn_t* conn,
                              void (*cb)(uvctx_pg_conn_t* conn, void* arg),
                              void* arg);

#endif /* UVCTX_PG_INTERNAL_H */
