/* Internals shared by the io layer and the stream kinds built on it (the
 * TLS session), defined in io/stream.c. Nothing here is part of the public
 * API. */
#ifndef UVCTX_IO_H
#define UVCTX_IO_H

#include "uvctx/stream_impl.h"

/* 1 if the stream cannot take new operations: closing, detached from its
 * handle, or never initialized. */
int uvctx__stream_unusable(const uvctx_stream_t* s);

#endif /* UVCTX_IO_H */
