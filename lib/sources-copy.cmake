# The stream interface and the cancellable copy/pipe (issue 3).
list(APPEND UVCTX_IO_SOURCES lib/stream.c lib/copy.c)
