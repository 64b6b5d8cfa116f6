# Observability (issue 6): log fields and the Prometheus text exposition.
# Tracing itself is lib/trace.c, in the core list.
list(APPEND UVCTX_IO_SOURCES lib/observe.c)
