/* The TLS configuration object: an SSL_CTX with uvctx's defaults (TLS 1.2
 * minimum, renegotiation refused, no resumption state, verifying clients),
 * certificate, trust, ALPN, version and cipher setters that fail at
 * configuration time with a reason, and the error-queue helper both TLS
 * files use. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls_internal.h"

/* After a loop of PEM reads: 1 if it stopped because the data ended (PEM's
 * "no start line", or nothing queued), 0 if an entry could not be read. */
static int pem_at_end(void) {
  unsigned long e = ERR_peek_last_error();
  return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM &&
                    ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

/* PEM files larger than this are refused: a certificate chain or a CA
 * bundle is a few hundred KiB at most, and a runaway path (a device, a
 * log file) must not be read whole into memory. */
#define PEM_FILE_MAX (16u << 20)

unsigned long uvctx__tls_drain_errors(const char* what, char* buf, size_t len) {
  unsigned long first = 0;
  unsigned long e;
  const char* r;

  while ((e = ERR_get_error()) != 0)
    if (first == 0)
      first = e;
  if (buf == NULL || len == 0)
    return first;
  r = first ? ERR_reason_error_string(first) : NULL;
  if (r == NULL && first != 0)
    r = "unknown OpenSSL error";
  if (what != NULL && r != NULL)
    snprintf(buf, len, "%s: %s", what, r);
  else if (what != NULL)
    snprintf(buf, len, "%s", what);
  else
    snprintf(buf, len, "%s", r ? r : "");
  return first;
}

/* The SSL_CTX's verify mode from the settings: a client verifies the
 * server unless told not to; a server asks for client certificates as
 * client_auth says. */
static void apply_verify(uvctx_tls_config_t* c) {
  int mode = SSL_VERIFY_NONE;

  if (c->role == UVCTX_TLS_CLIENT && c->verify)
    mode = SSL_VERIFY_PEER;
  else if (c->role == UVCTX_TLS_SERVER &&
           c->client_auth == UVCTX_TLS_CLIENT_AUTH_REQUEST)
    mode = SSL_VERIFY_PEER;
  else if (c->role == UVCTX_TLS_SERVER &&
           c->client_auth == UVCTX_TLS_CLIENT_AUTH_REQUIRE)
    mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(c->ctx, mode, NULL);
}

/* Records why a setter failed and returns err. */
static int fail(uvctx_tls_config_t* c, int err, const char* what) {
  uvctx__tls_drain_errors(what, c->reason, sizeof(c->reason));
  return err;
}

/* Records a failure that is ours, not OpenSSL's (a missing argument, no
 * memory): the reason is `what` alone, never a stale queued error. */
static int refuse(uvctx_tls_config_t* c, int err, const char* what) {
  ERR_clear_error();
  return fail(c, err, what);
}

int uvctx_tls_config_new(int role, uvctx_tls_config_t** out) {
  uvctx_tls_config_t* c;
  SSL_CTX* ctx;

  if (out == NULL || (role != UVCTX_TLS_CLIENT && role != UVCTX_TLS_SERVER))
    return UV_EINVAL;
  c = uvctx__calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  ERR_clear_error();
  ctx = SSL_CTX_new(role == UVCTX_TLS_SERVER ? TLS_server_method()
                                             : TLS_client_method());
  if (ctx == NULL)
    goto fail_ctx;
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
    goto fail_setup;
  /* Renegotiation is a source of CVEs and of state changes behind the
   * application's back: refuse it in both directions. Resumption is off
   * because the API has no session cache to offer; a server cache would
   * only grow. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (role == UVCTX_TLS_SERVER) {
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  } else {
    if (!SSL_CTX_set_default_verify_paths(ctx))
      goto fail_setup;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    c->verify = 1;
  }
  atomic_init(&c->refs, 1);
  c->role = role;
  c->ctx = ctx;
  *out = c;
  return 0;

fail_setup:
  SSL_CTX_free(ctx);
fail_ctx:
  ERR_clear_error();
  uvctx__free(c);
  return UV_ENOMEM;
}

uvctx_tls_config_t* uvctx_tls_config_ref(uvctx_tls_config_t* c) {
  if (c != NULL)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void uvctx_tls_config_unref(uvctx_tls_config_t* c) {
  if (c == NULL)
    return;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  SSL_CTX_free(c->ctx);
  uvctx__free(c->alpn);
  uvctx__free(c);
}

const char* uvctx_tls_config_reason(const uvctx_tls_config_t* c) {
  if (c == NULL || c->reason[0] == '\0')
    return NULL;
  return c->reason;
}

void* uvctx_tls_config_ssl_ctx(uvctx_tls_config_t* c) {
  return c != NULL ? c->ctx : NULL;
}

/* Reads a whole PEM file, so that file and memory setters share one parser
 * and file errors come back as errno codes rather than OpenSSL's. */
static int read_file(uvctx_tls_config_t* c, const char* path, char** out,
                     size_t* out_len) {
  FILE* f;
  char* buf = NULL;
  size_t len = 0;
  size_t cap = 0;
  size_t n;
  int err;

  f = fopen(path, "rb");
  if (f == NULL) {
    err = uv_translate_sys_error(errno);
    snprintf(c->reason, sizeof(c->reason), "%s: %s", path, uv_strerror(err));
    return err;
  }
  for (;;) {
    if (len == cap) {
      char* nb;
      if (cap >= PEM_FILE_MAX) {
        snprintf(c->reason, sizeof(c->reason), "%s: file too large", path);
        err = UV_EFBIG;
        goto out;
      }
      cap = cap ? cap * 2 : 16384;
      nb = uvctx__realloc(buf, cap);
      if (nb == NULL) {
        err = UV_ENOMEM;
        goto out;
      }
      buf = nb;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
  }
  if (ferror(f)) {
    err = uv_translate_sys_error(errno ? errno : EIO);
    snprintf(c->reason, sizeof(c->reason), "%s: %s", path, uv_strerror(err));
    goto out;
  }
  fclose(f);
  *out = buf;
  *out_len = len;
  return 0;

out:
  fclose(f);
  uvctx__free(buf);
  return err;
}

int uvctx_tls_config_cert_mem(uvctx_tls_config_t* c, const char* chain_pem,
                              size_t chain_len, const char* key_pem,
                              size_t key_len) {
  BIO* bio = NULL;
  BIO* kbio = NULL;
  X509* leaf = NULL;
  X509* extra;
  STACK_OF(X509)* chain = NULL;
  EVP_PKEY* key = NULL;
  int err = UV_EINVAL;

  if (c == NULL)
    return UV_EINVAL;
  if (chain_pem == NULL || key_pem == NULL || chain_len == 0 || key_len == 0 ||
      chain_len > INT_MAX || key_len > INT_MAX)
    return refuse(c, UV_EINVAL, "certificate: empty or missing PEM data");
  c->reason[0] = '\0';
  ERR_clear_error();

  /* Everything is read and checked before the SSL_CTX is touched, and then
   * installed in one call: a rejected certificate leaves the previous
   * certificate, key and chain in place and working. */
  bio = BIO_new_mem_buf(chain_pem, (int)chain_len);
  kbio = BIO_new_mem_buf(key_pem, (int)key_len);
  chain = sk_X509_new_null();
  if (bio == NULL || kbio == NULL || chain == NULL) {
    err = fail(c, UV_ENOMEM, "certificate");
    goto out;
  }
  leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
  if (leaf == NULL) {
    err = fail(c, UV_EINVAL, "certificate chain: no PEM certificate");
    goto out;
  }
  while ((extra = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (sk_X509_push(chain, extra) <= 0) {
      X509_free(extra);
      err = fail(c, UV_ENOMEM, "certificate chain");
      goto out;
    }
  }
  /* The loop ends on "no start line", which is how PEM says end of data;
   * any other error is a corrupt certificate, not the end of the chain. */
  if (!pem_at_end()) {
    err = fail(c, UV_EINVAL, "certificate chain: unreadable certificate");
    goto out;
  }
  ERR_clear_error();
  key = PEM_read_bio_PrivateKey(kbio, NULL, NULL, NULL);
  if (key == NULL) {
    err = fail(c, UV_EINVAL, "private key: no PEM private key");
    goto out;
  }
  if (X509_check_private_key(leaf, key) != 1) {
    err = fail(c, UV_EINVAL, "private key does not match the certificate");
    goto out;
  }
  /* Takes its own references; installs nothing unless all of it is
   * accepted (a key of the wrong type, a certificate too weak for the
   * security level). */
  if (SSL_CTX_use_cert_and_key(c->ctx, leaf, key, chain, 1) != 1) {
    err = fail(c, UV_EINVAL, "certificate");
    goto out;
  }
  c->has_cert = 1;
  err = 0;

out:
  sk_X509_pop_free(chain, X509_free);
  EVP_PKEY_free(key);
  X509_free(leaf);
  BIO_free(kbio);
  BIO_free(bio);
  ERR_clear_error();
  return err;
}

int uvctx_tls_config_cert_file(uvctx_tls_config_t* c, const char* chain_path,
                               const char* key_path) {
  char* chain = NULL;
  char* key = NULL;
  size_t chain_len = 0;
  size_t key_len = 0;
  int err;

  if (c == NULL)
    return UV_EINVAL;
  if (chain_path == NULL || key_path == NULL)
    return refuse(c, UV_EINVAL, "certificate: missing file name");
  c->reason[0] = '\0';
  err = read_file(c, chain_path, &chain, &chain_len);
  if (err != 0)
    return err;
  err = read_file(c, key_path, &key, &key_len);
  if (err != 0)
    goto out;
  if (chain_len == 0 || key_len == 0) {
    snprintf(c->reason, sizeof(c->reason), "%s: empty file",
             chain_len == 0 ? chain_path : key_path);
    err = UV_EINVAL;
    goto out;
  }
  err = uvctx_tls_config_cert_mem(c, chain, chain_len, key, key_len);

out:
  uvctx__free(key);
  uvctx__free(chain);
  return err;
}

int uvctx_tls_config_ca_mem(uvctx_tls_config_t* c, const char* pem,
                            size_t len) {
  X509_STORE* store;
  STACK_OF(X509_NAME)* names = NULL;
  BIO* bio;
  X509* x;
  int n = 0;

  if (c == NULL)
    return UV_EINVAL;
  if (pem == NULL || len == 0 || len > INT_MAX)
    return refuse(c, UV_EINVAL, "CA certificates: empty or missing PEM data");
  c->reason[0] = '\0';
  ERR_clear_error();
  bio = BIO_new_mem_buf(pem, (int)len);
  if (bio == NULL)
    return fail(c, UV_ENOMEM, "CA certificates");
  store = X509_STORE_new();
  /* A server names its CAs to clients (certificate_authorities), so that
   * a client holding several certificates picks the right one. */
  if (c->role == UVCTX_TLS_SERVER)
    names = sk_X509_NAME_new_null();
  if (store == NULL || (c->role == UVCTX_TLS_SERVER && names == NULL)) {
    BIO_free(bio);
    X509_STORE_free(store);
    sk_X509_NAME_free(names);
    return fail(c, UV_ENOMEM, "CA certificates");
  }
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    int ok = X509_STORE_add_cert(store, x);
    if (ok && names != NULL) {
      X509_NAME* name = X509_NAME_dup(X509_get_subject_name(x));
      ok = name != NULL && sk_X509_NAME_push(names, name) > 0;
      if (!ok)
        X509_NAME_free(name);
    }
    X509_free(x);
    if (!ok) {
      BIO_free(bio);
      X509_STORE_free(store);
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      return fail(c, UV_EINVAL, "CA certificates");
    }
    n++;
  }
  BIO_free(bio);
  if (!pem_at_end()) {
    X509_STORE_free(store);
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    return fail(c, UV_EINVAL, "CA certificates: unreadable certificate");
  }
  ERR_clear_error();
  if (n == 0) {
    X509_STORE_free(store);
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    return fail(c, UV_EINVAL, "CA certificates: no PEM certificate");
  }
  if (names != NULL)
    SSL_CTX_set_client_CA_list(c->ctx, names); /* takes `names` */
  /* Replaces the default paths (or an earlier CA set) as a whole: a trust
   * setting that only adds would silently keep trusting the system. */
  SSL_CTX_set_cert_store(c->ctx, store);
  c->has_ca = 1;
  return 0;
}

int uvctx_tls_config_ca_file(uvctx_tls_config_t* c, const char* path) {
  char* pem = NULL;
  size_t len = 0;
  int err;

  if (c == NULL)
    return UV_EINVAL;
  if (path == NULL)
    return refuse(c, UV_EINVAL, "CA certificates: missing file name");
  c->reason[0] = '\0';
  err = read_file(c, path, &pem, &len);
  if (err != 0)
    return err;
  if (len == 0) {
    snprintf(c->reason, sizeof(c->reason), "%s: empty file", path);
    err = UV_EINVAL;
  } else {
    err = uvctx_tls_config_ca_mem(c, pem, len);
  }
  uvctx__free(pem);
  return err;
}

int uvctx_tls_config_verify(uvctx_tls_config_t* c, int on) {
  if (c == NULL)
    return UV_EINVAL;
  c->reason[0] = '\0';
  if (c->role == UVCTX_TLS_SERVER)
    return uvctx_tls_config_client_auth(c, on ? UVCTX_TLS_CLIENT_AUTH_REQUIRE
                                              : UVCTX_TLS_CLIENT_AUTH_NONE);
  c->verify = on != 0;
  apply_verify(c);
  return 0;
}

int uvctx_tls_config_client_auth(uvctx_tls_config_t* c, int mode) {
  if (c == NULL)
    return UV_EINVAL;
  c->reason[0] = '\0';
  if (c->role != UVCTX_TLS_SERVER) {
    snprintf(c->reason, sizeof(c->reason),
             "client authentication: servers only");
    return UV_EINVAL;
  }
  if (mode != UVCTX_TLS_CLIENT_AUTH_NONE &&
      mode != UVCTX_TLS_CLIENT_AUTH_REQUEST &&
      mode != UVCTX_TLS_CLIENT_AUTH_REQUIRE) {
    snprintf(c->reason, sizeof(c->reason),
             "client authentication: unknown mode %d", mode);
    return UV_EINVAL;
  }
  c->client_auth = mode;
  c->verify = mode != UVCTX_TLS_CLIENT_AUTH_NONE;
  /* A server's store checks that a client's chain is fit for clientAuth
   * (OpenSSL's default purpose for a server context). */
  apply_verify(c);
  return 0;
}

/* Server preference: the first of our protocols that the client offered.
 * No overlap is a fatal no_application_protocol alert (RFC 7301 3.2); a
 * client that offers no ALPN at all never gets here. */
static int alpn_select(SSL* ssl, const unsigned char** out,
                       unsigned char* outlen, const unsigned char* in,
                       unsigned int inlen, void* arg) {
  uvctx_tls_config_t* c = arg;
  unsigned char* sel = NULL;
  unsigned char sel_len = 0;

  (void)ssl;
  if (SSL_select_next_proto(&sel, &sel_len, c->alpn, (unsigned)c->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  *outlen = sel_len;
  return SSL_TLSEXT_ERR_OK;
}

int uvctx_tls_config_alpn(uvctx_tls_config_t* c, const char* const* protos,
                          size_t n) {
  unsigned char* wire;
  size_t len = 0;
  size_t i;
  size_t off = 0;

  if (c == NULL)
    return UV_EINVAL;
  c->reason[0] = '\0';
  if (protos == NULL || n == 0) {
    snprintf(c->reason, sizeof(c->reason), "ALPN: empty protocol list");
    return UV_EINVAL;
  }
  for (i = 0; i < n; i++) {
    size_t l = protos[i] ? strlen(protos[i]) : 0;
    if (l == 0 || l > 255) {
      snprintf(c->reason, sizeof(c->reason),
               "ALPN: protocol %zu is empty or longer than 255 bytes", i);
      return UV_EINVAL;
    }
    len += 1 + l;
  }
  if (len > 65535) {
    snprintf(c->reason, sizeof(c->reason), "ALPN: list too long");
    return UV_EINVAL;
  }
  wire = uvctx__malloc(len);
  if (wire == NULL)
    return refuse(c, UV_ENOMEM, "ALPN: out of memory");
  for (i = 0; i < n; i++) {
    size_t l = strlen(protos[i]);
    wire[off++] = (unsigned char)l;
    memcpy(wire + off, protos[i], l);
    off += l;
  }
  if (c->role == UVCTX_TLS_CLIENT) {
    ERR_clear_error();
    /* SSL_CTX_set_alpn_protos returns 0 on success, unlike its siblings. */
    if (SSL_CTX_set_alpn_protos(c->ctx, wire, (unsigned)len) != 0) {
      uvctx__free(wire);
      return fail(c, UV_ENOMEM, "ALPN");
    }
  } else {
    SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, c);
  }
  uvctx__free(c->alpn);
  c->alpn = wire;
  c->alpn_len = len;
  return 0;
}

int uvctx_tls_config_versions(uvctx_tls_config_t* c, int min_version,
                              int max_version) {
  if (c == NULL)
    return UV_EINVAL;
  c->reason[0] = '\0';
  if ((min_version != UVCTX_TLS_1_2 && min_version != UVCTX_TLS_1_3) ||
      (max_version != 0 && max_version != UVCTX_TLS_1_2 &&
       max_version != UVCTX_TLS_1_3) ||
      (max_version != 0 && max_version < min_version)) {
    snprintf(c->reason, sizeof(c->reason),
             "versions: TLS 1.2 or 1.3 only, min <= max");
    return UV_EINVAL;
  }
  ERR_clear_error();
  if (!SSL_CTX_set_min_proto_version(c->ctx, min_version) ||
      !SSL_CTX_set_max_proto_version(c->ctx, max_version))
    return fail(c, UV_EINVAL, "versions");
  return 0;
}

int uvctx_tls_config_ciphers(uvctx_tls_config_t* c, const char* tls12,
                             const char* tls13) {
  SSL_CTX* probe;
  int ok12, ok13;

  if (c == NULL)
    return UV_EINVAL;
  c->reason[0] = '\0';
  ERR_clear_error();
  /* Both lists are tried on a scratch SSL_CTX first, so that a bad TLS 1.3
   * string cannot leave a new TLS 1.2 list applied: after an error the
   * configuration is unchanged. */
  probe = SSL_CTX_new(TLS_method());
  if (probe == NULL)
    return fail(c, UV_ENOMEM, "ciphers");
  ok12 = tls12 == NULL || SSL_CTX_set_cipher_list(probe, tls12) == 1;
  ok13 = tls13 == NULL || SSL_CTX_set_ciphersuites(probe, tls13) == 1;
  SSL_CTX_free(probe);
  if (!ok12)
    return fail(c, UV_EINVAL, "TLS 1.2 ciphers");
  if (!ok13)
    return fail(c, UV_EINVAL, "TLS 1.3 cipher suites");
  if ((tls12 != NULL && SSL_CTX_set_cipher_list(c->ctx, tls12) != 1) ||
      (tls13 != NULL && SSL_CTX_set_ciphersuites(c->ctx, tls13) != 1))
    return fail(c, UV_ENOMEM, "ciphers");
  return 0;
}
