/* HTTP/1.1 keep-alive client for one controller: non-blocking socket, every
 * exchange bounded by a deadline so the emulator thread never waits longer
 * than the configured timeout. */
#ifndef KP_HTTP_H
#define KP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Largest response (headers + body) accepted; anything bigger is refused. */
#define KP_HTTP_MAX_RESPONSE 16384
/* Addresses kept from resolving the host (each is tried in turn). */
#define KP_HTTP_MAX_ADDRS 8

struct addrinfo;

typedef enum {
    KP_HTTP_OK = 0,
    KP_HTTP_BACKOFF,      /* waiting before the next reconnect attempt */
    KP_HTTP_NO_ADDRESS,   /* host did not resolve */
    KP_HTTP_CONNECT,      /* connection refused / failed */
    KP_HTTP_TIMEOUT,      /* deadline passed (connect, send or receive) */
    KP_HTTP_SEND,         /* send failed (peer reset) */
    KP_HTTP_CLOSED,       /* peer closed before a complete response */
    KP_HTTP_MALFORMED,    /* not an HTTP response we understand */
    KP_HTTP_STATUS,       /* HTTP status other than 200 */
    KP_HTTP_CHUNKED,      /* Transfer-Encoding we refuse (chunked, ...) */
    KP_HTTP_OVERSIZED,    /* response larger than KP_HTTP_MAX_RESPONSE */
    KP_HTTP_EXTRA         /* bytes out of turn: beyond an answer, or before a request */
} kp_http_result;

const char *kp_http_result_name(kp_http_result r);

typedef struct {
    int fd;
    int connected;            /* 1 once connect() completed */
    int reused;               /* the socket already served a response */
    struct sockaddr_storage addrs[KP_HTTP_MAX_ADDRS];
    socklen_t addrlens[KP_HTTP_MAX_ADDRS];
    int naddrs;               /* 0: the host did not resolve */
    int cur;                  /* address to connect to next (the last that worked) */
    char host_header[300];
    uint64_t next_attempt_ms; /* reconnect not before this time */
    int backoff_ms;
    int backoff_min_ms;
    int backoff_max_ms;
    unsigned long connects;   /* successful TCP connections made */
    char buf[KP_HTTP_MAX_RESPONSE + 1];
    size_t len;
} kp_http_conn;

typedef struct {
    const char *method;       /* "GET" or "POST" */
    const char *path;         /* "/0" */
    const char *headers;      /* extra header lines, each ending "\r\n" (may be NULL) */
    const void *body;
    size_t body_len;
} kp_http_request;

/* Resolve host:port once (numeric hosts never block; names use the resolver)
 * and keep every address it resolves to (up to KP_HTTP_MAX_ADDRS). */
void kp_http_init(kp_http_conn *c, const char *host, int port, int backoff_min_ms, int backoff_max_ms);
/* The same from an already resolved list (tests); host_header is "host:port". */
void kp_http_init_list(kp_http_conn *c, const char *host_header, const struct addrinfo *list, int backoff_min_ms,
                       int backoff_max_ms);
void kp_http_close(kp_http_conn *c);

/* One request/response within timeout_ms. On KP_HTTP_OK *body points into the
 * connection's buffer (NUL-terminated) and stays valid until the next call.
 *
 * A connection that fails or answers something unusable (anything but a
 * complete 200, or bytes out of turn) is closed and the next connection
 * attempt waits for the backoff (backoff_min_ms, doubling up to
 * backoff_max_ms); until then the call returns KP_HTTP_BACKOFF at once.
 * KP_HTTP_OK leaves the backoff alone: the caller judges the body and calls
 * kp_http_answer_used() or kp_http_answer_unusable(). */
kp_http_result kp_http_exchange(kp_http_conn *c, const kp_http_request *req, int timeout_ms,
                                const char **body, size_t *body_len, int *status);
/* The last answer was used: the next failure backs off from backoff_min_ms again. */
void kp_http_answer_used(kp_http_conn *c);
/* The last answer (a 200) could not be used: close and back off as for a failure. */
void kp_http_answer_unusable(kp_http_conn *c);

/* Exposed for tests: parse a complete-or-partial response in buf.
 * Returns 1 when complete (fills body/len/keep_alive), 0 when more bytes are
 * needed, or a negative kp_http_result when the bytes can never be valid.
 * eof says the peer closed, which completes a body without Content-Length.
 * Bytes beyond a complete answer are -KP_HTTP_EXTRA: they were sent out of
 * turn, and may be (the start of) what would otherwise pass for the next answer. */
int kp_http_parse_response(const char *buf, size_t len, int eof, int *status, size_t *body_off,
                           size_t *body_len, int *keep_alive);

#endif
