# TLS benchmarks: handshakes per second and bulk throughput
# through uvctx_copy, each beside a bare OpenSSL memory-BIO peer.
uvctx_add_bench(bench_tls SOURCES bench_tls.c SMOKE_ARGS --quick)
