/* gai_gate.h: test names for the resolver. The suites that link gai_gate.c
 * resolve these names through an interposed getaddrinfo() (every other
 * name goes to the real one):
 *   gate.test   blocks until uvt_gai_gate_open(), then resolves as
 *               127.0.0.1 (a lookup that is running in the thread pool)
 *   dual.test   ::1 first, then 127.0.0.1 (a host with both families)
 *   dual4.test  127.0.0.1 first, then ::1
 *   none.test   no address (EAI_NONAME)
 * Only loopback addresses: no test ever sends a packet anywhere else. */
#ifndef UVCTX_TEST_GAI_GATE_H
#define UVCTX_TEST_GAI_GATE_H

/* Makes gate.test lookups block (the default is open). */
void uvt_gai_gate_close(void);
/* Lets blocked and future gate.test lookups through. */
void uvt_gai_gate_open(void);
/* gate.test lookups blocked right now. Any thread. */
int uvt_gai_gate_waiting(void);
/* getaddrinfo() calls made for the test names so far. */
int uvt_gai_calls(void);

#endif
