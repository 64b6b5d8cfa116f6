/* uvctx libuv operations: sleep, connect, resolve, dial, thread-pool work,
 * processes, signals, groups, receive and send, each obeying a context the
 * way Go's DialContext, exec.CommandContext, Resolver.LookupHost(ctx) and
 * signal.NotifyContext do, or Node's {signal} option.
 *
 * Include <uvctx/uv.h>; it includes <uvctx.h> and <uvctx/stream.h>.
 *
 * The contract every operation keeps:
 * - Requests are caller-allocated, libuv style: `data` is yours, the rest is
 *   private. A request must stay valid until its callback has run; it may
 *   be freed or reused in the callback.
 * - The callback runs exactly once, on the context's home loop thread,
 *   never inside the call that started the operation nor inside the call
 *   that cancelled its context. A call that returns an error never runs
 *   the callback and leaves nothing to clean up.
 * - The operation runs on the context's home loop
 *   (uvctx_loop_uv(uvctx_home(ctx))); start it on that loop's thread. A
 *   handle or stream on another loop is UV_EINVAL. The context itself may
 *   be cancelled from any thread.
 * - A context that is already done is not an error of the call: nothing is
 *   started (no process spawned, no connection attempted) and the callback
 *   reports the context's error.
 * - When the context is done first, the callback comes promptly with its
 *   error (UV_ECANCELED or UV_ETIMEDOUT); what the library started is
 *   stopped and freed by the library, late results included. Handles the
 *   operation closes are closed before the callback.
 * - Done wins a race: a result that arrives once the context is done is
 *   discarded (a connection closed, a lookup freed) and the callback
 *   reports the context's error. The one exception is a thread-pool job
 *   that already ran: its non-zero return value stands.
 * - The request holds a reference to the context until its callback has
 *   returned.
 * - Bad arguments (NULL request, context, handle or callback, a handle on
 *   another loop) are UV_EINVAL and allocate nothing.
 *
 * See docs/uv.md for the guide, examples and a section on porting from Go
 * and Node. */
#ifndef UVCTX_UV_H
#define UVCTX_UV_H

#include <uvctx.h>
#include <uvctx/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Sleep                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_sleep_s uvctx_sleep_t;
typedef void (*uvctx_sleep_cb)(uvctx_sleep_t* req, int status);

struct uvctx_sleep_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_sleep_cb cb_;
  uvctx_watch_t watch_;
  uv_timer_t timer_;
  uint64_t due_ns_;
  int status_;
  int state_;
};

/* time.After in a select on ctx.Done(); Node's timers/promises setTimeout
 * with {signal}. cb(req, 0) once `ms` milliseconds have passed on the
 * uv_hrtime() clock (never earlier: the timer is re-armed for what is
 * left), or cb(req, ctx's err) as soon as ctx is done. The request's timer
 * is closed before cb runs. UV_EINVAL for NULL req, ctx or cb. */
UVCTX_EXTERN int uvctx_sleep(uvctx_sleep_t* req, uvctx_t* ctx, uint64_t ms,
                             uvctx_sleep_cb cb);

/* ------------------------------------------------------------------------ */
/* Connect                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_connect_s uvctx_connect_t;
typedef void (*uvctx_connect_cb)(uvctx_connect_t* req, int status);

struct uvctx_connect_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_connect_cb cb_;
  uvctx_watch_t watch_;
  uv_connect_t req_;
  uv_stream_t* handle_;
  void* handle_data_; /* the handle's data, put back before cb */
  int status_;
  int state_;
};

/* Connects one address. libuv cannot cancel a connect: when ctx is done
 * first, the handle is closed and cb runs after its close callback with
 * ctx's err. On any non-zero status the handle has been closed (free its
 * memory in cb or later); on 0 it is open, connected and yours. A connect
 * that completes once ctx is done is closed too (done wins). The handle
 * must be initialized on ctx's home loop and not connected; its `data` is
 * borrowed while the library closes it and put back before cb.
 *
 * A connect that libuv refuses synchronously (uv_tcp_connect() returns an
 * error, e.g. UV_EINVAL for a bad address family) is the call's error:
 * nothing starts and the handle stays open and yours. UV_EINVAL for NULL
 * arguments, a handle on another loop or a closing handle. */
UVCTX_EXTERN int uvctx_tcp_connect(uvctx_connect_t* req, uvctx_t* ctx,
                                   uv_tcp_t* tcp, const struct sockaddr* addr,
                                   uvctx_connect_cb cb);

/* uvctx_tcp_connect() for a named pipe (a Unix domain socket path). libuv
 * reports every pipe connect error through the callback, so the call fails
 * only for bad arguments. */
UVCTX_EXTERN int uvctx_pipe_connect(uvctx_connect_t* req, uvctx_t* ctx,
                                    uv_pipe_t* pipe, const char* name,
                                    uvctx_connect_cb cb);

/* ------------------------------------------------------------------------ */
/* Resolve                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_getaddrinfo_s uvctx_getaddrinfo_t;
typedef void (*uvctx_getaddrinfo_cb)(uvctx_getaddrinfo_t* req, int status,
                                     struct addrinfo* res);

struct uvctx_getaddrinfo_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_getaddrinfo_cb cb_;
  uvctx_watch_t watch_;
  void* lookup_; /* the library's lookup: it may outlive the request */
  int state_;
};

/* Resolver.LookupHost(ctx): uv_getaddrinfo() bounded by ctx. A lookup still
 * queued when ctx is done is cancelled (uv_cancel); one already running in
 * the thread pool is abandoned: cb runs at once with ctx's err and res
 * NULL, and the library frees the late result when it arrives. On status 0
 * the caller frees res with uv_freeaddrinfo(); on any other status res is
 * NULL. Lookups share libuv's thread pool (UV_THREADPOOL_SIZE, 4 threads by
 * default) with file system and user work, which can delay them.
 *
 * node, service and hints are used only during the call. UV_EINVAL for
 * NULL req, ctx or cb, or both node and service NULL; UV_ENOMEM; else
 * uv_getaddrinfo()'s error. Allocates one block per lookup. */
UVCTX_EXTERN int uvctx_getaddrinfo(uvctx_getaddrinfo_t* req, uvctx_t* ctx,
                                   const char* node, const char* service,
                                   const struct addrinfo* hints,
                                   uvctx_getaddrinfo_cb cb);

/* ------------------------------------------------------------------------ */
/* Dial                                                                     */
/* ------------------------------------------------------------------------ */

/* Options of uvctx_dial(); zero-initialize, then set what you need. */
typedef struct uvctx_dial_options_s {
  int family;                 /* AF_UNSPEC (0), AF_INET or AF_INET6 */
  uint64_t fallback_delay_ms; /* 0: 300 ms; UINT64_MAX: one address at a time */
} uvctx_dial_options_t;

#define UVCTX_DIAL_DEFAULT_FALLBACK_DELAY_MS 300
/* The least share of a deadline one attempt gets (Go's saneMinimum). */
#define UVCTX_DIAL_MIN_ATTEMPT_MS 2000

typedef struct uvctx_dial_s uvctx_dial_t;
typedef void (*uvctx_dial_cb)(uvctx_dial_t* req, int status, uv_tcp_t* tcp);

/* One connection attempt of a dial (private). */
typedef struct uvctx_dial_racer_s {
  uv_tcp_t tcp;
  uv_connect_t req;
  struct addrinfo** addrs; /* the addresses this racer tries, in order */
  size_t next, count;
  int err; /* the error of its first attempt */
  int state;
  uv_timer_t timer; /* the attempt's share of ctx's deadline */
  int timer_open;
} uvctx_dial_racer_t;

struct uvctx_dial_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_dial_cb cb_;
  uv_tcp_t* tcp_;
  uvctx_watch_t watch_;
  void* lookup_;
  struct addrinfo* res_;
  struct addrinfo** order_; /* res_ split into the two racers' lists */
  uint64_t fallback_delay_ms_;
  uvctx_dial_racer_t racer_[2]; /* primary, fallback */
  uv_timer_t fallback_timer_;
  int status_;
  int closing_; /* handles still to close before cb */
  int timer_open_;
  int state_;
};

/* net.Dialer.DialContext for TCP. Resolves host (a name or a numeric
 * address) and port (a number or a service name), then connects to the
 * addresses in order, racing the other address family after
 * fallback_delay_ms (RFC 8305 Happy Eyeballs, Go's 300 ms default): the
 * primary family is that of the first address; if its racer runs out of
 * addresses first, the fallback starts at once. The first connection
 * wins, every other attempt is closed, and ctx bounds the whole dial.
 * Under a deadline, as in Go, each attempt gets a share of the time left:
 * divided evenly among the addresses its racer has left to try, but at
 * least UVCTX_DIAL_MIN_ATTEMPT_MS (or all that is left), so that one
 * hanging address cannot eat the whole budget; an attempt cut short
 * fails with UV_ETIMEDOUT and the next address is tried.
 *
 * `tcp` is uninitialized storage: on status 0 it is an initialized,
 * connected uv_tcp_t on ctx's home loop, yours to close; on any other
 * status it is untouched (nothing to close). Every handle the dial used
 * internally is closed before cb. The status of a failed dial is the
 * error of the first address tried (UV_ECONNREFUSED, ...), ctx's err if
 * ctx ended the dial, the resolver's error (UV_EAI_*), or UV_EAI_NONAME
 * when the name has no usable address. A connection made once ctx is
 * done is closed and the dial reports ctx's err.
 *
 * host, port and opts are used only during the call. UV_EINVAL for NULL
 * req, ctx, host, port, tcp or cb, or a family other than AF_UNSPEC,
 * AF_INET and AF_INET6; UV_ENOMEM. */
UVCTX_EXTERN int uvctx_dial(uvctx_dial_t* req, uvctx_t* ctx, const char* host,
                            const char* port, const uvctx_dial_options_t* opts,
                            uv_tcp_t* tcp, uvctx_dial_cb cb);

/* ------------------------------------------------------------------------ */
/* Thread-pool work                                                         */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_work_s uvctx_work_t;
typedef int (*uvctx_work_fn)(uvctx_work_t* req); /* on a pool thread */
typedef void (*uvctx_after_work_cb)(uvctx_work_t* req, int status);

struct uvctx_work_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_work_fn work_;
  uvctx_after_work_cb after_;
  uvctx_watch_t watch_;
  uv_work_t req_;
  int result_;
  int state_;
};

/* uv_queue_work() under ctx. If ctx is done before the work starts it never
 * starts (uv_cancel) and after(req, ctx's err) runs. Once started, the work
 * runs to its end (it may poll uvctx_err(uvctx_work_context(req)) from its
 * thread and return early); after(req, status) then runs with the work's
 * return value, or ctx's err if the work returned 0 after ctx was done.
 * This is the one operation whose callback waits: after() runs when the
 * job returns. The work returns 0 or a negative error code. UV_EINVAL for
 * NULL req, ctx, work or after. */
UVCTX_EXTERN int uvctx_queue_work(uvctx_work_t* req, uvctx_t* ctx,
                                  uvctx_work_fn work,
                                  uvctx_after_work_cb after);

/* The context of a work request (borrowed: valid until after() returns).
 * Any thread, including the pool thread running the work. */
UVCTX_EXTERN uvctx_t* uvctx_work_context(const uvctx_work_t* req);

/* ------------------------------------------------------------------------ */
/* Processes                                                                */
/* ------------------------------------------------------------------------ */

/* Options of uvctx_spawn(); zero-initialize, then set what you need. */
typedef struct uvctx_spawn_options_s {
  int cancel_signal;      /* 0: SIGTERM */
  uint64_t wait_delay_ms; /* 0: 5000; UINT64_MAX: never escalate */
  int process_group;      /* non-zero: the child leads a new process group
                             and both signals go to the whole group */
} uvctx_spawn_options_t;

#define UVCTX_SPAWN_DEFAULT_WAIT_DELAY_MS 5000

typedef struct uvctx_process_s uvctx_process_t;
typedef void (*uvctx_exit_cb)(uvctx_process_t* p, int status,
                              int64_t exit_status, int term_signal);

struct uvctx_process_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_exit_cb cb_;
  uvctx_watch_t watch_;
  uv_process_t process_;
  uv_timer_t kill_timer_;
  uint64_t wait_delay_ms_;
  uint64_t kill_due_ns_; /* uv_hrtime() of the SIGKILL */
  int64_t exit_status_;
  int term_signal_;
  int cancel_signal_;
  int group_;
  int pid_;
  int status_;
  int closing_; /* handles still to close before cb */
  int state_;
};

/* exec.CommandContext with Cancel and WaitDelay: uv_spawn() under ctx. When
 * ctx is done the process gets cancel_signal, and SIGKILL wait_delay_ms
 * later if it has not exited. cb runs once the process has exited and its
 * uv_process_t (and the library's timer) are closed: status 0 if it exited
 * before ctx was done (exit_status and term_signal say how), ctx's err if
 * its exit was seen once ctx was done, in particular whenever uvctx
 * signalled it (even if it then exited 0; exit_status and term_signal
 * still say how it ended), or the spawn error (UV_ENOENT, ...: uv_spawn()'s
 * error is reported through cb, asynchronously, since a failed exec is not
 * a failed call). An already-done ctx spawns nothing: cb(p, ctx's err, 0,
 * 0).
 *
 * With process_group the child runs in a new session and process group
 * (UV_PROCESS_DETACHED: it leads both) and the signals go to the whole
 * group, so pipelines and grandchildren stop too; once the leader has
 * exited no further signal is sent. Without it only the child is
 * signalled, and it stays in the caller's process group, where a
 * terminal's Ctrl-C reaches it directly as well.
 *
 * options->exit_cb must be NULL (uvctx owns the exit callback); options
 * and opts are used only during the call. UV_EINVAL for NULL p, ctx,
 * options, options->file or cb, options->exit_cb set, or a cancel_signal
 * outside 1..NSIG-1. */
UVCTX_EXTERN int uvctx_spawn(uvctx_process_t* p, uvctx_t* ctx,
                             const uv_process_options_t* options,
                             const uvctx_spawn_options_t* opts,
                             uvctx_exit_cb cb);

/* The child's pid while it runs; 0 before the spawn, when it failed, and
 * from its exit on (in cb too). */
UVCTX_EXTERN int uvctx_process_pid(const uvctx_process_t* p);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* signal.NotifyContext: stores in *out a child of parent (one reference for
 * the caller) that is cancelled with cause UV_EINTR and a message naming
 * the signal ("SIGTERM", "SIGINT", ...) when one of the `n` signals arrives
 * on parent's home loop. Its uv_signal_t handles are closed when a signal
 * arrived, when parent is done, or when the child is freed (Go's stop(): call
 * uvctx_release()); uvctx_loop_close() returns UV_EBUSY until that close has
 * begun. A child you cancelled yourself keeps its handles until it is
 * freed. While the handles are open the signals do not take their default
 * action. Under a done parent the child is born done and no handle is made.
 * Call on the home loop's thread. UV_EINVAL for NULL parent, signums or
 * out, n == 0, or a signal outside 1..NSIG-1 or one that cannot be caught
 * (SIGKILL, SIGSTOP); UV_ENOMEM; else uv_signal_start()'s error. */
UVCTX_EXTERN int uvctx_with_signals(uvctx_t* parent, const int* signums,
                                    size_t n, uvctx_t** out);

/* ------------------------------------------------------------------------ */
/* Groups                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_group_s uvctx_group_t;
typedef void (*uvctx_group_cb)(uvctx_group_t* g, int status);

struct uvctx_group_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_group_cb cb_;
  uvctx_watch_t watch_;
  uint64_t members_;
  int status_;
  int closed_;
  int state_;
};

/* errgroup.WithContext: members run under the group's context (a child of
 * parent, see uvctx_group_context()); the first member that ends with a
 * non-zero status cancels that context (cause: that status), so the
 * others stop; cb(g, status) runs once, from the loop, after
 * uvctx_group_close() and the last member's uvctx_group_done(), with the
 * first non-zero status or 0. The status is the members' only: 0 with no
 * members, even if parent is done. The group's context is cancelled when
 * cb is due and released after cb returns. Loop thread only (the home loop
 * of parent), for every group function. UV_EINVAL for NULL arguments;
 * UV_ENOMEM. */
UVCTX_EXTERN int uvctx_group_init(uvctx_group_t* g, uvctx_t* parent,
                                  uvctx_group_cb cb);

/* The group's context (borrowed: uvctx_ref() it to keep it past cb). */
UVCTX_EXTERN uvctx_t* uvctx_group_context(const uvctx_group_t* g);

/* Announces `n` more members. Not after uvctx_group_close(). */
UVCTX_EXTERN void uvctx_group_add(uvctx_group_t* g, unsigned n);

/* One member ended with `status` (0 or a negative code). More done than
 * add is a misuse; the extra calls are ignored. */
UVCTX_EXTERN void uvctx_group_done(uvctx_group_t* g, int status);

/* No more members will be added. Call it once. */
UVCTX_EXTERN void uvctx_group_close(uvctx_group_t* g);

/* ------------------------------------------------------------------------ */
/* Receive and send on a uvctx stream                                       */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_recv_s uvctx_recv_t;
typedef void (*uvctx_recv_cb)(uvctx_recv_t* req, ssize_t nread);

struct uvctx_recv_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_recv_cb cb_;
  uvctx_stream_t* stream_;
  uvctx_watch_t watch_;
  uv_buf_t buf_;
  ssize_t nread_;
  int state_;
};

/* One receive from a uvctx stream: cb(req, n) with the next n > 0 bytes
 * (at most buf.len, read into buf.base), UV_EOF, an I/O error, or ctx's
 * err. Reading stops after it. ctx is checked before each read: once it is
 * done nothing more is read, the bytes stay queued in the transport, the
 * stream stays open and a later receive gets them. Request-header and idle
 * timeouts are built from this. Bytes read before the context was seen
 * done are delivered (never dropped).
 *
 * At most one receive per stream at a time, and not on a stream a copy or
 * pipe drives (UV_EBUSY). Do not close the stream while a receive is
 * pending: end its context first. UV_EINVAL for NULL req, ctx, s, buf.base
 * or cb, buf.len 0, a closing stream, or one on another loop. */
UVCTX_EXTERN int uvctx_recv(uvctx_recv_t* req, uvctx_t* ctx, uvctx_stream_t* s,
                            uv_buf_t buf, uvctx_recv_cb cb);

typedef struct uvctx_send_s uvctx_send_t;
typedef void (*uvctx_send_cb)(uvctx_send_t* req, int status);

struct uvctx_send_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_send_cb cb_;
  uvctx_stream_t* stream_;
  void* stream_data_; /* the stream's data, put back before cb */
  uvctx_watch_t watch_;
  uvctx_write_t write_;
  int status_;
  int state_;
};

/* One send on a uvctx stream bounded by ctx (a write timeout): cb(req, 0)
 * once the bytes are written, or the write's error (the stream stays
 * open). A libuv write cannot be recalled: when ctx ends it first, or the
 * write completes once ctx is done, the stream is closed (its `data` is
 * borrowed meanwhile and put back) and cb runs after the stream's close
 * callback with ctx's err; free the stream in cb or later. An already-done
 * ctx writes nothing and leaves the stream open. The bytes are borrowed
 * until cb; the bufs array is copied. UV_EINVAL for NULL req, ctx, s, bufs
 * or cb, nbufs 0, a closing stream, or one on another loop; else
 * uvctx_stream_write()'s error (UV_EPIPE after a shutdown). */
UVCTX_EXTERN int uvctx_send(uvctx_send_t* req, uvctx_t* ctx, uvctx_stream_t* s,
                            const uv_buf_t bufs[], unsigned nbufs,
                            uvctx_send_cb cb);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_UV_H */
