/* Internals shared by the obs layer's files (dump.c, trace.c, observe.c),
 * defined in obs/site.c. Nothing here is part of the public API. */
#ifndef UVCTX_OBS_H
#define UVCTX_OBS_H

#include <stddef.h>

/* The name of a context kind (UVCTX__BACKGROUND ...) as reports and traces
 * print it: "background", "cancel", ..., or "?" for an unknown value. */
const char* uvctx__kind_name(unsigned kind);

/* Formats a creation site (a constructor's return address) into buf:
 * "function+0xOFF in module" when dladdr() names the symbol (executables
 * linked with -rdynamic), "0xOFF in module" (an offset for addr2line)
 * otherwise, or the bare pointer. Always NUL-terminates; returns buf. */
char* uvctx__site_format(void* site, char* buf, size_t size);

#endif /* UVCTX_OBS_H */
