/* Deadline-bounded HTTP/1.1 keep-alive client (see kp_http.h). */
#include "kp_http.h"
#include "kp_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

const char *kp_http_result_name(kp_http_result r)
{
    switch (r) {
    case KP_HTTP_OK: return "ok";
    case KP_HTTP_BACKOFF: return "waiting to reconnect";
    case KP_HTTP_NO_ADDRESS: return "host did not resolve";
    case KP_HTTP_CONNECT: return "connection failed";
    case KP_HTTP_TIMEOUT: return "timed out";
    case KP_HTTP_SEND: return "send failed";
    case KP_HTTP_CLOSED: return "server closed the connection mid-response";
    case KP_HTTP_MALFORMED: return "malformed HTTP response";
    case KP_HTTP_STATUS: return "HTTP status not 200";
    case KP_HTTP_CHUNKED: return "unsupported Transfer-Encoding (chunked)";
    case KP_HTTP_OVERSIZED: return "response too large";
    case KP_HTTP_EXTRA: return "server sent bytes out of turn (beyond an answer or before a request)";
    }
    return "unknown";
}

void kp_http_init_list(kp_http_conn *c, const char *host_header, const struct addrinfo *list, int backoff_min_ms,
                       int backoff_max_ms)
{
    const struct addrinfo *ai;

    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->backoff_min_ms = backoff_min_ms > 0 ? backoff_min_ms : 1;
    c->backoff_max_ms = backoff_max_ms >= c->backoff_min_ms ? backoff_max_ms : c->backoff_min_ms;
    c->backoff_ms = c->backoff_min_ms;
    snprintf(c->host_header, sizeof c->host_header, "%s", host_header);
    for (ai = list; ai && c->naddrs < KP_HTTP_MAX_ADDRS; ai = ai->ai_next) {
        if (!ai->ai_addr || ai->ai_addrlen == 0 || ai->ai_addrlen > sizeof c->addrs[0])
            continue;
        memcpy(&c->addrs[c->naddrs], ai->ai_addr, ai->ai_addrlen);
        c->addrlens[c->naddrs] = ai->ai_addrlen;
        c->naddrs++;
    }
}

void kp_http_init(kp_http_conn *c, const char *host, int port, int backoff_min_ms, int backoff_max_ms)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16], host_header[300];
    int rc;

    snprintf(host_header, sizeof host_header, "%s:%d", host, port);
    snprintf(portstr, sizeof portstr, "%d", port);

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    /* Resolution happens here (RomOpen), never inside GetKeys, because a
     * resolver call can block for seconds. */
    rc = getaddrinfo(host, portstr, &hints, &res);
    kp_http_init_list(c, host_header, rc == 0 ? res : NULL, backoff_min_ms, backoff_max_ms);
    if (res)
        freeaddrinfo(res);
    if (c->naddrs == 0)
        kp_log(KP_LOG_ERROR, "cannot resolve host '%s': %s", host, rc ? gai_strerror(rc) : "no address");
}

void kp_http_close(kp_http_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->connected = 0;
    c->reused = 0;
    c->len = 0;
}

/* Wait for events on fd until deadline_us; returns revents, 0 on timeout. */
static int wait_fd(int fd, short events, uint64_t deadline_us)
{
    for (;;) {
        uint64_t now = kp_now_us();
        struct pollfd p = { fd, events, 0 };
        struct timespec ts;
        int rc;
        if (now >= deadline_us)
            return 0;
        ts.tv_sec = (time_t)((deadline_us - now) / 1000000u);
        ts.tv_nsec = (long)((deadline_us - now) % 1000000u) * 1000L;
        rc = ppoll(&p, 1, &ts, NULL);
        if (rc > 0)
            return p.revents ? p.revents : events;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return POLLERR;
    }
}

static int ci_prefix(const char *s, const char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - s) < n)
        return 0;
    return strncasecmp(s, word, n) == 0;
}

/* Case-insensitive search of token in [s, end). */
static int ci_contains(const char *s, const char *end, const char *token)
{
    size_t n = strlen(token);
    for (; s + n <= end; s++)
        if (strncasecmp(s, token, n) == 0)
            return 1;
    return 0;
}

int kp_http_parse_response(const char *buf, size_t len, int eof, int *status, size_t *body_off,
                           size_t *body_len, int *keep_alive)
{
    const char *hdr_end = NULL, *p, *end;
    size_t i, head_len;
    long content_length = -1;
    int minor, code, ka;

    for (i = 0; i + 3 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
            hdr_end = buf + i;
            break;
        }
    }
    /* Reject an obviously wrong status line early, even before headers end. */
    if (len >= 5 && memcmp(buf, "HTTP/", 5) != 0)
        return -KP_HTTP_MALFORMED;
    if (!hdr_end) {
        if (len >= KP_HTTP_MAX_RESPONSE)
            return -KP_HTTP_OVERSIZED;
        return eof ? -KP_HTTP_CLOSED : 0;
    }
    head_len = (size_t)(hdr_end - buf) + 4;

    /* Status line: HTTP/1.x NNN reason */
    if (head_len < 14 || memcmp(buf, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)buf[7]) || buf[8] != ' ')
        return -KP_HTTP_MALFORMED;
    minor = buf[7] - '0';
    if (!isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]))
        return -KP_HTTP_MALFORMED;
    code = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (code < 200 || (buf[12] != ' ' && buf[12] != '\r'))
        return -KP_HTTP_MALFORMED; /* 1xx interim responses are never expected */
    ka = minor >= 1;

    /* Header lines */
    p = memchr(buf, '\n', head_len);
    p = p ? p + 1 : hdr_end;
    while (p < hdr_end) {
        const char *eol = memchr(p, '\n', (size_t)(hdr_end + 2 - p));
        const char *colon, *v;
        if (!eol)
            eol = hdr_end;
        end = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
        colon = memchr(p, ':', (size_t)(end - p));
        if (!colon || colon == p)
            return -KP_HTTP_MALFORMED;
        v = colon + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        if (ci_prefix(p, colon, "content-length") && colon - p == 14) {
            long n = 0;
            const char *q = v;
            if (q == end)
                return -KP_HTTP_MALFORMED;
            for (; q < end && isdigit((unsigned char)*q); q++) {
                n = n * 10 + (*q - '0');
                if (n > KP_HTTP_MAX_RESPONSE)
                    return -KP_HTTP_OVERSIZED;
            }
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q != end || (content_length >= 0 && content_length != n))
                return -KP_HTTP_MALFORMED;
            content_length = n;
        } else if (ci_prefix(p, colon, "transfer-encoding") && colon - p == 17) {
            if (!(end - v == 8 && strncasecmp(v, "identity", 8) == 0))
                return -KP_HTTP_CHUNKED;
        } else if (ci_prefix(p, colon, "connection") && colon - p == 10) {
            if (ci_contains(v, end, "close"))
                ka = 0;
            else if (ci_contains(v, end, "keep-alive"))
                ka = 1;
        }
        p = eol + 1;
    }

    *status = code;
    *body_off = head_len;
    if (code == 204 || code == 304) {
        content_length = 0;
    }
    if (content_length >= 0) {
        if (head_len + (size_t)content_length > KP_HTTP_MAX_RESPONSE)
            return -KP_HTTP_OVERSIZED;
        if (len < head_len + (size_t)content_length)
            return eof ? -KP_HTTP_CLOSED : 0;
        /* Bytes after the body were sent out of turn: they could pass for the
         * next answer, and this answer may itself be one sent out of turn. */
        if (len > head_len + (size_t)content_length)
            return -KP_HTTP_EXTRA;
        *body_len = (size_t)content_length;
        *keep_alive = ka;
        return 1;
    }
    /* No length: the body runs until the server closes (HTTP/1.0 style). */
    if (!eof) {
        if (len >= KP_HTTP_MAX_RESPONSE)
            return -KP_HTTP_OVERSIZED;
        return 0;
    }
    *body_len = len - head_len;
    *keep_alive = 0;
    return 1;
}

static kp_http_result open_socket(kp_http_conn *c)
{
    int one = 1;
    int fd = socket(c->addrs[c->cur].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KP_HTTP_CONNECT;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->len = 0;
    c->reused = 0;
    if (connect(fd, (struct sockaddr *)&c->addrs[c->cur], c->addrlens[c->cur]) == 0) {
        c->connected = 1;
        c->connects++;
        return KP_HTTP_OK;
    }
    if (errno == EINPROGRESS || errno == EINTR) {
        c->connected = 0;
        return KP_HTTP_OK;
    }
    kp_http_close(c);
    return KP_HTTP_CONNECT;
}

static kp_http_result finish_connect(kp_http_conn *c, uint64_t deadline_us)
{
    int err = 0;
    socklen_t elen = sizeof err;
    int ev = wait_fd(c->fd, POLLOUT, deadline_us);
    if (ev == 0)
        return KP_HTTP_TIMEOUT;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0)
        return KP_HTTP_CONNECT;
    c->connected = 1;
    c->connects++;
    return KP_HTTP_OK;
}

/* Connect to the first address that accepts, starting with the one that
 * worked last; a refused address moves on to the next at once, one that
 * times out uses up this poll and the next attempt starts after it. */
static kp_http_result connect_any(kp_http_conn *c, uint64_t deadline_us)
{
    kp_http_result r = KP_HTTP_CONNECT;
    int tried;
    for (tried = 0; tried < c->naddrs; tried++) {
        if (tried && kp_now_us() >= deadline_us)
            return KP_HTTP_TIMEOUT;
        r = open_socket(c);
        if (r == KP_HTTP_OK && !c->connected)
            r = finish_connect(c, deadline_us);
        if (r == KP_HTTP_OK)
            return KP_HTTP_OK;
        kp_http_close(c);
        c->cur = (c->cur + 1) % c->naddrs;
    }
    return r;
}

/* Before a request is sent, nothing may be waiting on the socket.
 * 0: quiet; 1: the server closed (or reset) it, so it cannot carry the
 * request; -1: the server sent bytes out of turn. */
static int idle_state(int fd)
{
    struct pollfd p = { fd, POLLIN | POLLRDHUP, 0 };
    char byte;
    int rc = poll(&p, 1, 0);
    if (rc == 0)
        return 0;
    if (rc < 0)
        return 1;
    return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0 ? -1 : 1;
}

static kp_http_result send_all(kp_http_conn *c, const char *head, size_t head_len, const void *body,
                               size_t body_len, uint64_t deadline_us)
{
    size_t sent = 0, total = head_len + body_len;
    while (sent < total) {
        struct iovec iov[2];
        struct msghdr msg;
        int n = 0;
        ssize_t w;
        if (sent < head_len) {
            iov[n].iov_base = (void *)(head + sent);
            iov[n].iov_len = head_len - sent;
            n++;
            if (body_len) {
                iov[n].iov_base = (void *)body;
                iov[n].iov_len = body_len;
                n++;
            }
        } else {
            iov[n].iov_base = (char *)body + (sent - head_len);
            iov[n].iov_len = total - sent;
            n++;
        }
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ev = wait_fd(c->fd, POLLOUT, deadline_us);
            if (ev == 0)
                return KP_HTTP_TIMEOUT;
            if (ev & (POLLERR | POLLHUP))
                return KP_HTTP_SEND;
            continue;
        }
        return KP_HTTP_SEND;
    }
    return KP_HTTP_OK;
}

/* Servers that write headers and body separately without TCP_NODELAY (the
 * stdlib http.server, Werkzeug) stall ~40 ms on our delayed ACK; quick ACKs
 * avoid that. The flag is not sticky, so it is renewed around every read. */
static void quick_ack(int fd)
{
#ifdef TCP_QUICKACK
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
    (void)fd;
#endif
}

static void fail_backoff(kp_http_conn *c)
{
    c->next_attempt_ms = kp_now_ms() + (uint64_t)c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > c->backoff_max_ms ? c->backoff_max_ms : c->backoff_ms * 2;
}

/* Every failed exchange ends here: the connection is dropped and the next
 * one waits, so a server that keeps failing cannot make us open a new TCP
 * connection per poll (hundreds per second, ports lost to TIME_WAIT). */
static kp_http_result fail(kp_http_conn *c, kp_http_result r)
{
    kp_http_close(c);
    fail_backoff(c);
    return r;
}

void kp_http_answer_used(kp_http_conn *c)
{
    c->backoff_ms = c->backoff_min_ms;
    c->next_attempt_ms = 0;
}

void kp_http_answer_unusable(kp_http_conn *c)
{
    fail(c, KP_HTTP_MALFORMED);
}

kp_http_result kp_http_exchange(kp_http_conn *c, const kp_http_request *req, int timeout_ms,
                                const char **body, size_t *body_len, int *status)
{
    char head[6144];
    int head_len, attempt;
    uint64_t deadline_us = kp_now_us() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000u;

    *body = NULL;
    *body_len = 0;
    *status = 0;
    if (c->naddrs == 0)
        return KP_HTTP_NO_ADDRESS;

    if (req->body_len || strcmp(req->method, "GET") != 0)
        head_len = snprintf(head, sizeof head,
                            "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n"
                            "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n%s\r\n",
                            req->method, req->path, c->host_header, req->body_len,
                            req->headers ? req->headers : "");
    else
        head_len = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n%s\r\n",
                            req->method, req->path, c->host_header, req->headers ? req->headers : "");
    if (head_len < 0 || (size_t)head_len >= sizeof head)
        return KP_HTTP_SEND;

    /* Two attempts: a reused keep-alive socket may have been closed by the
     * server while idle; that is retried once on a fresh connection. */
    for (attempt = 0; attempt < 2; attempt++) {
        kp_http_result r;
        int was_reused, eof = 0, idle;
        size_t off = 0, blen = 0;
        int ka = 0, code = 0;

        if (c->fd < 0) {
            if (kp_now_ms() < c->next_attempt_ms)
                return KP_HTTP_BACKOFF;
            r = connect_any(c, deadline_us);
            if (r != KP_HTTP_OK)
                return fail(c, r);
        }
        was_reused = c->reused;
        /* Anything the server sent before our request is out of turn and must
         * never be read as its answer; a reused socket the server closed
         * while idle is normal keep-alive housekeeping. */
        idle = idle_state(c->fd);
        if (idle < 0)
            return fail(c, KP_HTTP_EXTRA);
        if (idle > 0) {
            if (was_reused) {
                kp_http_close(c);
                continue;
            }
            return fail(c, KP_HTTP_CLOSED);
        }
        c->len = 0;

        r = send_all(c, head, (size_t)head_len, req->body, req->body_len, deadline_us);
        if (r == KP_HTTP_SEND && was_reused) {
            kp_http_close(c);
            continue;
        }
        if (r != KP_HTTP_OK)
            return fail(c, r);

        for (;;) {
            int pr = kp_http_parse_response(c->buf, c->len, eof, &code, &off, &blen, &ka);
            ssize_t n;
            if (pr == 1)
                break;
            if (pr < 0)
                return fail(c, (kp_http_result)(-pr));
            if (eof) /* parse said "need more" but there is no more */
                return fail(c, KP_HTTP_CLOSED);
            quick_ack(c->fd);
            n = recv(c->fd, c->buf + c->len, KP_HTTP_MAX_RESPONSE - c->len, 0);
            if (n > 0) {
                c->len += (size_t)n;
                continue;
            }
            if (n == 0) {
                if (c->len == 0 && was_reused)
                    break; /* stale keep-alive socket: retry below */
                eof = 1;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_fd(c->fd, POLLIN, deadline_us) == 0)
                    return fail(c, KP_HTTP_TIMEOUT);
                continue;
            }
            if (c->len == 0 && was_reused)
                break;
            return fail(c, KP_HTTP_CLOSED); /* reset mid-response */
        }
        if (c->len == 0) { /* stale socket detected while reading */
            kp_http_close(c);
            continue;
        }

        c->buf[off + blen] = '\0';
        *body = c->buf + off;
        *body_len = blen;
        *status = code;
        if (code != 200) /* keep the body readable: the buffer outlives the socket */
            return fail(c, KP_HTTP_STATUS);
        if (ka) {
            c->reused = 1;
        } else {
            close(c->fd);
            c->fd = -1;
            c->connected = 0;
            c->reused = 0;
        }
        return KP_HTTP_OK;
    }
    return fail(c, KP_HTTP_CLOSED);
}
