/* uvctx TLS: an OpenSSL 3 session over any uvctx stream, client or server,
 * that is itself a uvctx stream, so uvctx_copy_start() and uvctx_pipe_start()
 * work over TLS unchanged. Its handshake takes a context: when the context is
 * done mid-handshake, the session stops, closes its transport and reports the
 * context's error (UV_ECANCELED or UV_ETIMEDOUT).
 *
 * Two objects:
 * - uvctx_tls_config_t wraps an SSL_CTX: role, certificates, trust,
 *   verification, ALPN, versions. Reference counted; set it up on one
 *   thread, then share it read-only between sessions on any loop.
 * - uvctx_tls_t is one session, caller-allocated like a libuv handle. Its
 *   `stream` member is the plaintext stream: use it with uvctx_stream_*.
 *
 * Errors are 0 or negative libuv codes. TLS failures map onto the codes
 * below; uvctx_tls_reason() gives OpenSSL's reason string for logs.
 *
 * See docs/tls.md for the guide. */
#ifndef UVCTX_TLS_H
#define UVCTX_TLS_H

#include <uvctx/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How TLS failures are reported (all are libuv codes):
 * UVCTX_TLS_EVERIFY     we rejected the peer's certificate (unknown CA,
 *                       expired, wrong host name or address, ...).
 * UVCTX_TLS_EPROTO      the peer broke the protocol (garbage, bad or
 *                       oversized records, unexpected messages), or we
 *                       found no common version, cipher or ALPN protocol
 *                       (the side that finds it; the other side then gets
 *                       our alert: UVCTX_TLS_EALERT).
 * UVCTX_TLS_EALERT      the peer aborted with a fatal alert (for instance
 *                       it rejected our certificate, or it asked for a
 *                       renegotiation, got our no_renegotiation warning
 *                       and gave up, as OpenSSL peers do).
 * UVCTX_TLS_ETRUNCATED  the peer's end of stream came without close_notify
 *                       (data may have been cut off; also a peer that goes
 *                       away mid-handshake, with or without one).
 * Transport errors (UV_ECONNRESET, UV_EPIPE, ...) are passed through, and a
 * handshake aborted by its context reports the context's error. */
#define UVCTX_TLS_EVERIFY UV_EACCES
#define UVCTX_TLS_EPROTO UV_EPROTO
#define UVCTX_TLS_EALERT UV_EREMOTEIO
#define UVCTX_TLS_ETRUNCATED UV_ECONNABORTED

/* Roles and protocol versions (the TLS wire values). */
enum { UVCTX_TLS_CLIENT = 0, UVCTX_TLS_SERVER = 1 };
enum { UVCTX_TLS_1_2 = 0x0303, UVCTX_TLS_1_3 = 0x0304 };

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_tls_config_s uvctx_tls_config_t; /* opaque */

/* A new configuration for `role` holding one reference for the caller.
 * Defaults: TLS 1.2 to 1.3, renegotiation refused, no session resumption
 * (no cache, no tickets). A client trusts the system's default CA paths and
 * verifies the server's certificate and name; a server asks for no client
 * certificate. UV_EINVAL for a bad role or NULL out, UV_ENOMEM. */
UVCTX_EXTERN int uvctx_tls_config_new(int role, uvctx_tls_config_t** out);

/* References. Sessions hold one on their configuration, so the caller may
 * drop its own after uvctx_tls_init(). Any thread. NULL is ignored. */
UVCTX_EXTERN uvctx_tls_config_t* uvctx_tls_config_ref(uvctx_tls_config_t* c);
UVCTX_EXTERN void uvctx_tls_config_unref(uvctx_tls_config_t* c);

/* The setters below must be called before the configuration is used by a
 * session, from one thread. Each returns 0 or an error; after an error
 * uvctx_tls_config_reason() says why, and the configuration is unchanged
 * as far as that setting goes. */

/* The certificate chain (PEM: the leaf first, then intermediates) and its
 * private key (PEM, optionally the same file). UV_ENOENT/UV_EACCES/... if a
 * file cannot be read, UV_EFBIG for a file over 16 MiB, UV_EINVAL if it is
 * empty, holds no certificate or key, has an unreadable certificate in the
 * chain, or if the key does not match the certificate. Everything is
 * checked before anything is installed: after an error the previous
 * certificate, key and chain are still the ones served. */
UVCTX_EXTERN int uvctx_tls_config_cert_file(uvctx_tls_config_t* c,
                                            const char* chain_path,
                                            const char* key_path);
UVCTX_EXTERN int uvctx_tls_config_cert_mem(uvctx_tls_config_t* c,
                                           const char* chain_pem,
                                           size_t chain_len,
                                           const char* key_pem, size_t key_len);

/* Trust exactly the CA certificates in a PEM file or buffer (replacing the
 * system defaults, or an earlier call). A client verifies servers against
 * them; a server verifies client certificates against them (see
 * uvctx_tls_config_client_auth(); a server also names them to clients as
 * acceptable issuers). Errors as above: a certificate that cannot be read
 * inside the bundle is an error, not the end of the list. */
UVCTX_EXTERN int uvctx_tls_config_ca_file(uvctx_tls_config_t* c,
                                          const char* path);
UVCTX_EXTERN int uvctx_tls_config_ca_mem(uvctx_tls_config_t* c, const char* pem,
                                         size_t len);

/* Peer verification on (1, the client default) or off (0). Off, a client
 * accepts any certificate: for tests and pinned setups only. On a server
 * it is uvctx_tls_config_client_auth() with UVCTX_TLS_CLIENT_AUTH_REQUIRE
 * (1) or _NONE (0). */
UVCTX_EXTERN int uvctx_tls_config_verify(uvctx_tls_config_t* c, int on);

/* Client certificates, for servers (the default is NONE):
 * NONE     do not ask for one.
 * REQUEST  ask; a client may send none, but one it sends must verify.
 * REQUIRE  ask, and refuse a client without a certificate that verifies.
 * Verification is against the CAs of uvctx_tls_config_ca_file()/_mem()
 * (required: uvctx_tls_init() fails with UV_EINVAL without them), with the
 * chain's purpose checked (clientAuth). The server's handshake then fails
 * with UVCTX_TLS_EVERIFY ("peer did not return a certificate", "certificate
 * verify failed: ..."); the client sees UVCTX_TLS_EALERT, with TLS 1.3 only
 * at its first read, since its own handshake completes first. A client
 * sends the certificate set with uvctx_tls_config_cert_file()/_mem() when
 * asked. UV_EINVAL for a client configuration or another mode. */
enum {
  UVCTX_TLS_CLIENT_AUTH_NONE = 0,
  UVCTX_TLS_CLIENT_AUTH_REQUEST = 1,
  UVCTX_TLS_CLIENT_AUTH_REQUIRE = 2
};
UVCTX_EXTERN int uvctx_tls_config_client_auth(uvctx_tls_config_t* c, int mode);

/* ALPN protocols, most preferred first: a client offers them, a server
 * selects the first of its own list that the client offered (and refuses
 * the handshake with no_application_protocol if none matches; a client
 * that offers nothing is accepted without ALPN). UV_EINVAL for an empty
 * list or a name that is empty or longer than 255 bytes. */
UVCTX_EXTERN int uvctx_tls_config_alpn(uvctx_tls_config_t* c,
                                       const char* const* protos, size_t n);

/* Protocol versions, UVCTX_TLS_1_2 or UVCTX_TLS_1_3 (max 0: the newest).
 * UV_EINVAL below TLS 1.2 or for min > max. */
UVCTX_EXTERN int uvctx_tls_config_versions(uvctx_tls_config_t* c,
                                           int min_version, int max_version);

/* OpenSSL cipher strings: `tls12` for TLS 1.2 (SSL_CTX_set_cipher_list),
 * `tls13` for TLS 1.3 suites (SSL_CTX_set_ciphersuites); NULL keeps the
 * default. UV_EINVAL if OpenSSL rejects one; then neither is applied. */
UVCTX_EXTERN int uvctx_tls_config_ciphers(uvctx_tls_config_t* c,
                                          const char* tls12, const char* tls13);

/* Why the last setter failed (OpenSSL's reason, the file error, or what
 * argument was missing), or NULL after a success. The string lives until
 * the next setter call. UV_EINVAL for a NULL configuration leaves no
 * reason (there is nowhere to put one). */
UVCTX_EXTERN const char* uvctx_tls_config_reason(const uvctx_tls_config_t* c);

/* The underlying SSL_CTX* (as void*, so that this header needs no OpenSSL
 * header: cast it), for settings this API does not cover. Changing it once
 * sessions exist is not supported. */
UVCTX_EXTERN void* uvctx_tls_config_ssl_ctx(uvctx_tls_config_t* c);

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_tls_s uvctx_tls_t;
typedef void (*uvctx_tls_handshake_cb)(uvctx_tls_t* tls, int status);

/* A session, caller-allocated. `stream` is the plaintext stream (its `data`
 * is yours); the rest is private. */
struct uvctx_tls_s {
  uvctx_stream_t stream;
  /* private */
  struct uvctx__tls_s* impl_;
  char reason_[256]; /* uvctx_tls_reason() once impl_ is freed */
};

/* Makes `tls` a session of `config`'s role over `transport`, a connected
 * uvctx stream (a libuv stream, or any other kind) on the same loop that is
 * not reading and not closing. The session takes over the transport: its
 * `data` field, its read callbacks, writes and shutdown belong to the
 * session from now on, and closing the session closes it. The transport's
 * memory must stay valid until the session's close callback has run.
 *
 * `server_name` (clients only; NULL for servers) is sent as SNI when it is
 * a host name and is what the certificate must match: a host name against
 * DNS SANs only (no partial wildcards, never the subject CN), an IPv4/IPv6
 * literal against IP SANs (and then no SNI is sent). A verifying client
 * needs it: UV_EINVAL without (or for ""). Also UV_EINVAL for NULL
 * tls/config/transport, a closing or detached transport, or a server
 * configuration without a certificate, with a server_name, or asking for
 * client certificates without CAs; UV_ENOMEM.
 *
 * Nothing is sent until uvctx_tls_handshake(), or until the first read or
 * write, which start the handshake without a context. Plaintext writes are
 * queued until the handshake completes. The session must be closed with
 * uvctx_stream_close(&tls->stream, cb) whatever happens (a failed
 * handshake closes the transport, not the session); the session's memory
 * may be reused in or after cb. Loop thread only.
 *
 * As a stream: a write's callback runs once the transport has written the
 * ciphertext carrying its last byte. uvctx_stream_try_write() takes the
 * bytes (up to one 66 KiB unit of ciphertext) when nothing of the
 * session's is on its way out and the handshake is done, else answers
 * UV_EAGAIN; what the transport leaves of their ciphertext stays with the
 * session, counted in uvctx_stream_write_queue_size() until written.
 * Each read fills the reader's buffer with as many records as have
 * arrived; once the reader stops, the transport is read only while less
 * than 8 KiB of received ciphertext waits (the rest stays in the kernel).
 * uvctx_stream_shutdown() sends close_notify after the queued writes, then
 * shuts the transport's write half down. A peer's close_notify reads as
 * UV_EOF; an end of stream without it as UVCTX_TLS_ETRUNCATED.
 * uvctx_stream_close() is abortive: pending callbacks get UV_ECANCELED. On
 * a fatal error the session hands OpenSSL's alert to the transport before
 * closing it. OpenSSL's per-thread error queue is cleared around every
 * operation, so one session's failure never shows in another's. Memory
 * follows the data: plaintext is encrypted only as fast as the transport
 * takes the records (the rest waits in the writer's buffers, or is refused
 * by the try-write), so a session behind a slow reader holds at most 66
 * KiB of ciphertext and an idle one no transmit buffer; a transfer being
 * read keeps a 128 KiB receive buffer (docs/tls.md, "Memory and
 * copies"). */
UVCTX_EXTERN int uvctx_tls_init(uvctx_tls_t* tls, uvctx_tls_config_t* config,
                                uvctx_stream_t* transport,
                                const char* server_name);

/* Runs the handshake under `ctx` (NULL: no context) and calls cb(tls,
 * status) exactly once, from the loop, never inside this call: 0 when the
 * handshake completed; a UVCTX_TLS_E* code or a transport error when it
 * failed; the context's error (UV_ECANCELED, UV_ETIMEDOUT) when `ctx` was
 * done first; UV_ECANCELED when the session was closed first. On failure
 * the transport is closed (the SSL object is freed in its close callback)
 * before cb runs; then close the session.
 *
 * `ctx` must be homed on the session's loop; the session holds a reference
 * to it until cb has returned, so the caller may drop its own at once and
 * cb may still read its cause and values. Once the handshake is done the
 * context no longer matters to the session. UV_EINVAL for NULL tls/cb, a
 * session closed or closing, or a context homed elsewhere; UV_EALREADY if a
 * handshake was already started (by this call or implicitly by a read or
 * write); the session's error if it failed. */
UVCTX_EXTERN int uvctx_tls_handshake(uvctx_tls_t* tls, uvctx_t* ctx,
                                     uvctx_tls_handshake_cb cb);

/* The negotiated ALPN protocol (NUL-terminated) or NULL. After the
 * handshake. */
UVCTX_EXTERN const char* uvctx_tls_alpn(const uvctx_tls_t* tls);

/* The SNI host name: on a server the one the client sent, on a client the
 * one it sent (its server_name); NULL when none was sent (an IP literal, a
 * client without SNI). */
UVCTX_EXTERN const char* uvctx_tls_server_name(const uvctx_tls_t* tls);

/* The negotiated version (UVCTX_TLS_1_2, UVCTX_TLS_1_3) and cipher suite
 * name (OpenSSL's), or 0/NULL before the handshake. */
UVCTX_EXTERN int uvctx_tls_version(const uvctx_tls_t* tls);
UVCTX_EXTERN const char* uvctx_tls_cipher(const uvctx_tls_t* tls);

/* The subject of the certificate the peer presented and we verified
 * (OpenSSL's one-line form, "/CN=alice/O=..."), or NULL: for a server
 * with client authentication, who the client is. After the handshake;
 * lives as long as the session. Servers only (a client knows the name it
 * verified). */
UVCTX_EXTERN const char* uvctx_tls_peer_subject(const uvctx_tls_t* tls);

/* OpenSSL's reason for the session's failure ("certificate verify failed:
 * hostname mismatch", "wrong version number", "packet length too long",
 * ...), for logs, or NULL. Kept after the close: it may be read in and after
 * the session's close callback (and so in the callback of a copy or pipe
 * that closed the session), until `tls` is reused or freed. */
UVCTX_EXTERN const char* uvctx_tls_reason(const uvctx_tls_t* tls);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_TLS_H */
