/* The stream interface (include/uvctx/stream.h): the generic layer that
 * checks arguments and state, keeps the request bookkeeping and enforces
 * the callback order every kind promises, and the implementation over a
 * libuv stream (uv_tcp_t, uv_pipe_t, uv_tty_t). */
#include <stddef.h>
#include <string.h>
#ifndef _WIN32
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

#include "common/alloc.h"
#include "common/debug.h"
#include "io/io.h"
#include "uvctx/stream_impl.h"

/* The kinds' typed members never grow the private storage past its slots:
 * the layout of the public structs does not depend on them. */
#define CHECK_STORAGE(type, n)                                        \
  _Static_assert(sizeof(type) == (n) * sizeof(uvctx_stream_slot_t) && \
                     _Alignof(type) == _Alignof(uvctx_stream_slot_t), \
                 #type " grew past its slots")
CHECK_STORAGE(uvctx_stream_storage_t, 2);
CHECK_STORAGE(uvctx_write_storage_t, 4);
CHECK_STORAGE(uvctx_shutdown_storage_t, 2);

enum {
  S_READING = 1u << 0,
  S_SHUT = 1u << 1,     /* a shutdown was accepted: writes get UV_EPIPE */
  S_SHUTTING = 1u << 2, /* its callback has not run yet */
  S_CLOSING = 1u << 3,  /* uvctx_stream_close() was called */
  S_CLOSED = 1u << 4,   /* the implementation reported close_done */
  S_DETACHED = 1u << 5
};

/* ---- the generic layer --------------------------------------------------- */

int uvctx_stream_init(uvctx_stream_t* s, const uvctx_stream_ops_t* ops,
                      uv_loop_t* loop) {
  if (s == NULL || ops == NULL || loop == NULL || ops->read_start == NULL ||
      ops->read_stop == NULL || ops->write == NULL || ops->shutdown == NULL ||
      ops->close == NULL || ops->write_queue_size == NULL)
    return UVCTX__EINVAL("a NULL stream, ops, loop or required op");
  s->data = NULL;
  s->ops_ = ops;
  s->loop_ = loop;
  s->alloc_cb_ = NULL;
  s->read_cb_ = NULL;
  s->close_cb_ = NULL;
  s->writes_pending_ = 0;
  s->flags_ = 0;
  memset(&s->impl_, 0, sizeof(s->impl_));
  s->owner_ = NULL;
  return 0;
}

static int unusable(const uvctx_stream_t* s) {
  return s->ops_ == NULL || (s->flags_ & (S_CLOSING | S_DETACHED)) != 0;
}

int uvctx__stream_unusable(const uvctx_stream_t* s) {
  return unusable(s);
}

int uvctx_stream_read_start(uvctx_stream_t* s, uvctx_alloc_cb alloc_cb,
                            uvctx_read_cb read_cb) {
  uvctx_alloc_cb old_alloc;
  uvctx_read_cb old_read;
  unsigned was_reading;
  int rc;

  if (s == NULL || alloc_cb == NULL || read_cb == NULL)
    return UVCTX__EINVAL("the stream or a callback is NULL");
  if (unusable(s))
    return UVCTX__EINVAL("the stream is closing, detached or uninitialized");
  old_alloc = s->alloc_cb_;
  old_read = s->read_cb_;
  was_reading = s->flags_ & S_READING;
  s->alloc_cb_ = alloc_cb;
  s->read_cb_ = read_cb;
  s->flags_ |= S_READING;
  rc = s->ops_->read_start(s);
  if (rc != 0) {
    /* As it was: a failed call changes nothing. */
    s->alloc_cb_ = old_alloc;
    s->read_cb_ = old_read;
    s->flags_ = (s->flags_ & ~S_READING) | was_reading;
  }
  return rc;
}

int uvctx_stream_read_stop(uvctx_stream_t* s) {
  if (s == NULL || s->ops_ == NULL)
    return UVCTX__EINVAL("the stream is NULL or uninitialized");
  if (unusable(s))
    return 0;
  s->flags_ &= ~S_READING;
  return s->ops_->read_stop(s);
}

int uvctx_stream_write(uvctx_write_t* req, uvctx_stream_t* s,
                       const uv_buf_t bufs[], unsigned nbufs,
                       uvctx_write_cb cb) {
  size_t size;
  unsigned i;
  int rc;

  if (req == NULL || s == NULL || bufs == NULL || nbufs == 0)
    return UVCTX__EINVAL("a NULL request, stream or bufs, or no buffer");
  if (unusable(s))
    return UVCTX__EINVAL("the stream is closing, detached or uninitialized");
  if (s->flags_ & S_SHUT)
    return UV_EPIPE;
  size = 0;
  for (i = 0; i < nbufs; i++)
    size += bufs[i].len;
  req->stream_ = s;
  req->cb_ = cb;
  req->size_ = size;
  req->next_ = NULL;
  s->writes_pending_++;
  rc = s->ops_->write(s, req, bufs, nbufs);
  if (rc != 0)
    s->writes_pending_--;
  return rc;
}

int uvctx_stream_try_write(uvctx_stream_t* s, const uv_buf_t bufs[],
                           unsigned nbufs) {
  if (s == NULL || bufs == NULL || nbufs == 0)
    return UVCTX__EINVAL("a NULL stream or bufs, or no buffer");
  if (unusable(s))
    return UVCTX__EINVAL("the stream is closing, detached or uninitialized");
  if (s->flags_ & S_SHUT)
    return UV_EPIPE;
  if (s->ops_->try_write == NULL)
    return UV_ENOSYS;
  /* Bytes written now would overtake the queued ones. */
  if (s->writes_pending_ != 0)
    return UV_EAGAIN;
  return s->ops_->try_write(s, bufs, nbufs);
}

int uvctx_stream_shutdown(uvctx_shutdown_t* req, uvctx_stream_t* s,
                          uvctx_shutdown_cb cb) {
  int rc;

  if (req == NULL || s == NULL)
    return UVCTX__EINVAL("the request or the stream is NULL");
  if (unusable(s))
    return UVCTX__EINVAL("the stream is closing, detached or uninitialized");
  if (s->flags_ & S_SHUT)
    return UV_ENOTCONN;
  req->stream_ = s;
  req->cb_ = cb;
  s->flags_ |= S_SHUT | S_SHUTTING;
  rc = s->ops_->shutdown(s, req);
  if (rc != 0)
    s->flags_ &= ~(S_SHUT | S_SHUTTING);
  return rc;
}

void uvctx_stream_close(uvctx_stream_t* s, uvctx_stream_close_cb cb) {
  if (s == NULL || s->ops_ == NULL || (s->flags_ & (S_CLOSING | S_DETACHED)))
    return;
  s->flags_ |= S_CLOSING;
  s->flags_ &= ~S_READING;
  s->close_cb_ = cb;
  s->ops_->close(s);
}

size_t uvctx_stream_write_queue_size(const uvctx_stream_t* s) {
  if (s == NULL || s->ops_ == NULL || (s->flags_ & (S_CLOSED | S_DETACHED)))
    return 0;
  return s->ops_->write_queue_size(s);
}

int uvctx_stream_is_closing(const uvctx_stream_t* s) {
  return s != NULL && (s->flags_ & S_CLOSING) != 0;
}

uv_loop_t* uvctx_stream_loop(const uvctx_stream_t* s) {
  return s == NULL ? NULL : s->loop_;
}

size_t uvctx_stream_writes_pending(const uvctx_stream_t* s) {
  return s == NULL ? 0 : s->writes_pending_;
}

uvctx_stream_t* uvctx_write_stream(const uvctx_write_t* req) {
  return req->stream_;
}

size_t uvctx_write_size(const uvctx_write_t* req) {
  return req->size_;
}

void uvctx_stream_emit_alloc(uvctx_stream_t* s, size_t suggested,
                             uv_buf_t* buf) {
  if ((s->flags_ & (S_READING | S_CLOSING)) != S_READING) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  s->alloc_cb_(s, suggested, buf);
}

void uvctx_stream_emit_read(uvctx_stream_t* s, ssize_t nread,
                            const uv_buf_t* buf) {
  if ((s->flags_ & (S_READING | S_CLOSING)) != S_READING)
    return;
  /* Like libuv, the read side is finished after EOF or an error: clear the
   * flag before the callback so that a read_start inside it is honoured. */
  if (nread < 0 && nread != UV_ENOBUFS)
    s->flags_ &= ~S_READING;
  s->read_cb_(s, nread, buf);
}

/* The close callback is the last thing that touches the stream: it is held
 * back until every write and the shutdown have completed, so that users
 * may free the stream (and requests living next to it) inside it. */
static void maybe_finish_close(uvctx_stream_t* s) {
  uvctx_stream_close_cb cb;

  if ((s->flags_ & (S_CLOSED | S_SHUTTING)) != S_CLOSED ||
      s->writes_pending_ != 0)
    return;
  cb = s->close_cb_;
  s->close_cb_ = NULL;
  if (cb != NULL)
    cb(s);
}

void uvctx_stream_write_done(uvctx_write_t* req, int status) {
  uvctx_stream_t* s;

  s = req->stream_;
  s->writes_pending_--;
  if (req->cb_ != NULL)
    req->cb_(req, status);
  maybe_finish_close(s);
}

void uvctx_stream_shutdown_done(uvctx_shutdown_t* req, int status) {
  uvctx_stream_t* s;

  s = req->stream_;
  s->flags_ &= ~S_SHUTTING;
  if (req->cb_ != NULL)
    req->cb_(req, status);
  maybe_finish_close(s);
}

void uvctx_stream_close_done(uvctx_stream_t* s) {
  s->flags_ |= S_CLOSED;
  maybe_finish_close(s);
}

/* ---- the libuv implementation -------------------------------------------- */

#define UVS(s) (&(s)->impl_.uv)
#define UVS_HANDLE(s) (UVS(s)->handle)

static void uvs_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  uvctx_stream_emit_alloc(h->data, suggested, buf);
}

/* libuv 1.44 reports UV_EOF, without reading the socket error, when epoll
 * says POLLHUP after a partial read: a peer's reset then looks like a clean
 * end and a copy would report a truncated transfer as a success. The
 * pending socket error tells the two apart. */
static ssize_t uvs_eof_or_error(uv_stream_t* h) {
#ifndef _WIN32
  uv_os_fd_t fd;
  socklen_t len;
  int err;

  if (h->type != UV_TCP && h->type != UV_NAMED_PIPE)
    return UV_EOF;
  if (uv_fileno((uv_handle_t*)h, &fd) != 0)
    return UV_EOF;
  err = 0;
  len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err > 0)
    return -err;
#else
  (void)h;
#endif
  return UV_EOF;
}

static void uvs_read(uv_stream_t* h, ssize_t nread, const uv_buf_t* buf) {
  if (nread == UV_EOF)
    nread = uvs_eof_or_error(h);
  uvctx_stream_emit_read(h->data, nread, buf);
}

static int uvs_read_start(uvctx_stream_t* s) {
  int rc = uv_read_start(UVS_HANDLE(s), uvs_alloc, uvs_read);
  /* libuv 1.44 refuses a second start; ours only swaps the callbacks,
   * which the generic layer has done (libuv's stay ours). */
  return rc == UV_EALREADY ? 0 : rc;
}

static int uvs_read_stop(uvctx_stream_t* s) {
  return uv_read_stop(UVS_HANDLE(s));
}

/* libuv runs every write callback from the loop, never inside uv_write();
 * after uv_close() the callbacks of unfinished writes see UV_ECANCELED, but
 * a write the kernel had already taken whose callback was still queued
 * sees 0: the bytes did leave. Both run before the close callback. */
static void uvs_write_cb(uv_write_t* w, int status) {
  uvctx_stream_write_done(UVCTX__CONTAINER_OF(w, uvctx_write_t, uv_), status);
}

static int uvs_write(uvctx_stream_t* s, uvctx_write_t* req,
                     const uv_buf_t bufs[], unsigned nbufs) {
  return uv_write(&req->uv_, UVS_HANDLE(s), bufs, nbufs, uvs_write_cb);
}

static void uvs_shutdown_cb(uv_shutdown_t* r, int status) {
  uvctx_stream_shutdown_done(UVCTX__CONTAINER_OF(r, uvctx_shutdown_t, uv_),
                             status);
}

static int uvs_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req) {
  return uv_shutdown(&req->uv_, UVS_HANDLE(s), uvs_shutdown_cb);
}

static void uvs_close_cb(uv_handle_t* h) {
  uvctx_stream_close_done(h->data);
}

static void uvs_close(uvctx_stream_t* s) {
  uv_close((uv_handle_t*)UVS_HANDLE(s), uvs_close_cb);
}

static size_t uvs_write_queue_size(const uvctx_stream_t* s) {
  return uv_stream_get_write_queue_size(UVS_HANDLE(s));
}

/* libuv answers UV_EAGAIN itself while its own queue is not empty. */
static int uvs_try_write(uvctx_stream_t* s, const uv_buf_t bufs[],
                         unsigned nbufs) {
  return uv_try_write(UVS_HANDLE(s), bufs, nbufs);
}

static const uvctx_stream_ops_t uvs_ops = {
    "uv",         uvs_read_start, uvs_read_stop,        uvs_write,
    uvs_shutdown, uvs_close,      uvs_write_queue_size, uvs_try_write};

/* ---- coalescing a burst (see io.h) ------------------------------------- */

#ifndef _WIN32
/* The socket of a libuv TCP stream, or -1. */
static int uvs_tcp_fd(const uvctx_stream_t* s) {
  uv_os_fd_t fd;

  if (s->ops_ != &uvs_ops || UVS_HANDLE(s)->type != UV_TCP ||
      uv_fileno((const uv_handle_t*)UVS_HANDLE(s), &fd) != 0)
    return -1;
  return fd;
}

int uvctx__stream_can_coalesce(const uvctx_stream_t* s) {
  socklen_t len;
  int fd;
  int on;

  fd = uvs_tcp_fd(s);
  on = 0;
  len = sizeof(on);
  return fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 &&
         on;
}

void uvctx__stream_coalesce(uvctx_stream_t* s, int on) {
  int nodelay;
  int fd;

  fd = unusable(s) ? -1 : uvs_tcp_fd(s);
  nodelay = !on;
  if (fd >= 0)
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
}
#else
int uvctx__stream_can_coalesce(const uvctx_stream_t* s) {
  (void)s;
  return 0;
}

void uvctx__stream_coalesce(uvctx_stream_t* s, int on) {
  (void)s;
  (void)on;
}
#endif

int uvctx_stream_init_uv(uvctx_stream_t* s, uv_stream_t* h) {
  uv_handle_type t;

  if (s == NULL || h == NULL)
    return UV_EINVAL;
  t = uv_handle_get_type((uv_handle_t*)h);
  if (t != UV_TCP && t != UV_NAMED_PIPE && t != UV_TTY)
    return UV_EINVAL;
  /* An active stream handle is reading or listening: either way its
   * callbacks belong to someone else. */
  if (uv_is_closing((uv_handle_t*)h) || uv_is_active((uv_handle_t*)h))
    return UV_EINVAL;
  /* Never connected (or its connect failed): neither readable nor
   * writable. Wrapping it would only turn the mistake into a later I/O
   * error. */
  if (!uv_is_readable(h) && !uv_is_writable(h))
    return UV_ENOTCONN;
  uvctx_stream_init(s, &uvs_ops, h->loop);
  UVS(s)->handle = h;
  UVS(s)->saved_data = h->data;
  h->data = s;
  return 0;
}

uv_stream_t* uvctx_stream_uv_handle(const uvctx_stream_t* s) {
  if (s == NULL || s->ops_ != &uvs_ops)
    return NULL;
  return UVS_HANDLE(s);
}

int uvctx_stream_uv_detach(uvctx_stream_t* s) {
  uv_stream_t* h;

  if (s == NULL || s->ops_ != &uvs_ops || unusable(s))
    return UV_EINVAL;
  if (s->writes_pending_ != 0 || (s->flags_ & S_SHUTTING))
    return UV_EBUSY;
  h = UVS_HANDLE(s);
  uv_read_stop(h);
  h->data = UVS(s)->saved_data;
  s->flags_ = S_DETACHED;
  UVS(s)->handle = NULL;
  UVS(s)->saved_data = NULL;
  return 0;
}
