/* Unit tests of the plugin's pure parts: HTTP response framing, the JSON
 * answer, telemetry profiles (byte order) and the frame flip/downscale. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kp_frame.h"
#include "kp_http.h"
#include "kp_input.h"
#include "kp_profile.h"

static int failures, checks;

#define CHECK(cond)                                                              \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

static int parse(const char *s, int eof, int *status, size_t *off, size_t *len, int *ka)
{
    return kp_http_parse_response(s, strlen(s), eof, status, off, len, ka);
}

static void test_http(void)
{
    int st, ka;
    size_t off, len;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    char big[KP_HTTP_MAX_RESPONSE + 64];

    CHECK(parse(ok, 0, &st, &off, &len, &ka) == 1 && st == 200 && len == 2 && ka == 1);
    CHECK(memcmp(ok + off, "{}", 2) == 0);
    /* partial: headers or body incomplete -> need more; at EOF -> closed */
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Len", 0, &st, &off, &len, &ka) == 0);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", 0, &st, &off, &len, &ka) == 0);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", 1, &st, &off, &len, &ka) == -KP_HTTP_CLOSED);
    /* garbage */
    CHECK(parse("GARBAGE\r\n\r\n", 0, &st, &off, &len, &ka) == -KP_HTTP_MALFORMED);
    CHECK(parse("HTTP/1.1 2x0 OK\r\n\r\n", 0, &st, &off, &len, &ka) == -KP_HTTP_MALFORMED);
    CHECK(parse("HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", 0, &st, &off, &len, &ka) == -KP_HTTP_MALFORMED);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", 0, &st, &off, &len, &ka) == -KP_HTTP_MALFORMED);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 0, &st, &off, &len, &ka) ==
          -KP_HTTP_MALFORMED);
    CHECK(parse("HTTP/1.1 100 Continue\r\n\r\n", 0, &st, &off, &len, &ka) == -KP_HTTP_MALFORMED);
    /* chunked and oversized are refused */
    CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 0, &st, &off, &len,
                &ka) == -KP_HTTP_CHUNKED);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, &st, &off, &len, &ka) ==
          -KP_HTTP_OVERSIZED);
    memset(big, 'x', sizeof big);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    CHECK(kp_http_parse_response(big, KP_HTTP_MAX_RESPONSE, 0, &st, &off, &len, &ka) == -KP_HTTP_OVERSIZED);
    /* HTTP/1.0 without length: body until close, never kept alive */
    CHECK(parse("HTTP/1.0 200 OK\r\n\r\n{\"A_BUTTON\":1}", 0, &st, &off, &len, &ka) == 0);
    CHECK(parse("HTTP/1.0 200 OK\r\n\r\n{\"A_BUTTON\":1}", 1, &st, &off, &len, &ka) == 1 && len == 14 && ka == 0);
    CHECK(parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", 0, &st, &off, &len,
                &ka) == 1 && ka == 1);
    CHECK(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 0, &st, &off, &len, &ka) ==
              1 && ka == 0);
    /* bytes beyond the body were sent out of turn: the whole exchange is refused */
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk", 0, &st, &off, &len, &ka) == -KP_HTTP_EXTRA);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0,
                &st, &off, &len, &ka) == -KP_HTTP_EXTRA);
    CHECK(parse("HTTP/1.1 204 No Content\r\n\r\nx", 0, &st, &off, &len, &ka) == -KP_HTTP_EXTRA);
    CHECK(parse("HTTP/1.1 500 Internal\r\nContent-Length: 2\r\n\r\n{}", 0, &st, &off, &len, &ka) == 1 && st == 500);
}

static int input(const char *body, uint32_t *v, kp_cmd *cmd, int64_t *id)
{
    return kp_input_parse(body, strlen(body), v, cmd, id);
}

static void test_input(void)
{
    uint32_t v;
    kp_cmd cmd;
    int64_t id;
    const char *full = "{\"START_BUTTON\":0,\"Z_TRIG\":0,\"B_BUTTON\":1,\"A_BUTTON\":1,\"R_TRIG\":1,\"L_TRIG\":0,"
                       "\"U_DPAD\":0,\"D_DPAD\":0,\"L_DPAD\":0,\"R_DPAD\":0,\"U_CBUTTON\":0,\"D_CBUTTON\":0,"
                       "\"L_CBUTTON\":0,\"R_CBUTTON\":0,\"X_AXIS\":-80,\"Y_AXIS\":80}";

    CHECK(kp_input_parse(full, strlen(full), &v, &cmd, &id) == 0 && cmd == KP_CMD_NONE);
    CHECK((v & 0xffff) == ((1u << 6) | (1u << 7) | (1u << 12)));
    CHECK((int8_t)((v >> 16) & 0xff) == -80 && (int8_t)(v >> 24) == 80);
    CHECK(kp_input_parse("{}", strlen("{}"), &v, &cmd, &id) == 0 && v == 0);
    CHECK(kp_input_parse("{\"X_AXIS\": 1000, \"Y_AXIS\": -1000.7}", strlen("{\"X_AXIS\": 1000, \"Y_AXIS\": -1000.7}"), &v, &cmd, &id) == 0);
    CHECK((int8_t)((v >> 16) & 0xff) == 127 && (int8_t)(v >> 24) == -128);
    CHECK(kp_input_parse("{\"X_AXIS\": 12.6}", strlen("{\"X_AXIS\": 12.6}"), &v, &cmd, &id) == 0 && (int8_t)((v >> 16) & 0xff) == 13);
    CHECK(kp_input_parse("{\"A_BUTTON\": \"yes\", \"B_BUTTON\": true}", strlen("{\"A_BUTTON\": \"yes\", \"B_BUTTON\": true}"), &v, &cmd, &id) == 0 && v == (1u << 6));
    CHECK(kp_input_parse("{\"A_BUTTON\": 1, \"CMD\": \"reset\"}", strlen("{\"A_BUTTON\": 1, \"CMD\": \"reset\"}"), &v, &cmd, &id) == 0 && cmd == KP_CMD_RESET &&
          v == (1u << 7));
    CHECK(kp_input_parse("{\"CMD\": \"save\"}", strlen("{\"CMD\": \"save\"}"), &v, &cmd, &id) == 0 && cmd == KP_CMD_SAVE);
    CHECK(kp_input_parse("{\"CMD\": \"explode\"}", strlen("{\"CMD\": \"explode\"}"), &v, &cmd, &id) == 0 && cmd == KP_CMD_UNKNOWN);
    /* CMD must match exactly: an embedded NUL or a longer string is not reset */
    CHECK(input("{\"CMD\": \"reset\\u0000x\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_UNKNOWN);
    CHECK(input("{\"CMD\": \"save\\u0000\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_UNKNOWN);
    CHECK(input("{\"CMD\": \"resetx\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_UNKNOWN);
    CHECK(input("{\"CMD\": \"RESET\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_UNKNOWN);
    CHECK(input("{\"CMD\": \"\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_NONE);
    /* CMD_ID: absent 0, a positive integer as is, anything else -1 */
    CHECK(input("{\"CMD\": \"reset\"}", &v, &cmd, &id) == 0 && cmd == KP_CMD_RESET && id == 0);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": 7}", &v, &cmd, &id) == 0 && cmd == KP_CMD_RESET && id == 7);
    CHECK(input("{\"CMD\": \"save\", \"CMD_ID\": 4294967297}", &v, &cmd, &id) == 0 && cmd == KP_CMD_SAVE &&
          id == 4294967297LL);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": \"7\"}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": 0}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": -3}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": 2.5}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": true}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": 99999999999999999999}", &v, &cmd, &id) == 0 && id == -1);
    CHECK(input("{\"CMD\": \"reset\", \"CMD_ID\": -99999999999999999999}", &v, &cmd, &id) == 0 && id == -1);
    /* garbage -> -1 and neutral */
    CHECK(kp_input_parse("{\"A_BUTTON\": 1", strlen("{\"A_BUTTON\": 1"), &v, &cmd, &id) == -1 && v == 0);
    CHECK(kp_input_parse("[1, 2]", strlen("[1, 2]"), &v, &cmd, &id) == -1 && v == 0);
    CHECK(kp_input_parse("{\"A_BUTTON\": 1} trailing", strlen("{\"A_BUTTON\": 1} trailing"), &v, &cmd, &id) == -1);
    CHECK(kp_input_parse("{\"A_BUTTON\": 1}\r\n", strlen("{\"A_BUTTON\": 1}\r\n"), &v, &cmd, &id) == 0 && v == (1u << 7));
    CHECK(kp_input_parse("", strlen(""), &v, &cmd, &id) == -1);
    CHECK(kp_input_parse("{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}", strlen("{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}"), &v, &cmd, &id) == -1);
}

/* Write size bytes: one entry, then comment lines padded with '#' up to size. */
static int write_profile(const char *path, size_t size, int nul)
{
    const char *entry = "w 0x80000100 u32\n";
    FILE *fp = fopen(path, "wb");
    size_t i;
    if (!fp)
        return -1;
    fputs(entry, fp);
    for (i = strlen(entry); i < size; i++)
        fputc(nul && i == size / 2 ? '\0' : (i + 1 == size || i % 64 == 63) ? '\n' : '#', fp);
    return fclose(fp);
}

static void test_profile_file_limits(void)
{
    kp_profile p;
    char err[512], dir[] = "/tmp/kp_unit_dirXXXXXX", path[64];
    struct stat st;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/profile.txt", dir);
    /* exactly 64 KiB is accepted, one byte more is not */
    CHECK(write_profile(path, KP_PROFILE_FILE_MAX, 0) == 0 && stat(path, &st) == 0 &&
          st.st_size == (off_t)KP_PROFILE_FILE_MAX);
    CHECK(kp_profile_load_file(path, &p, err, sizeof err) == 0 && p.count == 1);
    if (p.count != 1)
        fprintf(stderr, "  64 KiB file: %s\n", err);
    CHECK(write_profile(path, KP_PROFILE_FILE_MAX + 1, 0) == 0);
    CHECK(kp_profile_load_file(path, &p, err, sizeof err) == -1 && strstr(err, "larger than 64 KiB") &&
          strstr(err, path) && p.count == 0);
    /* a NUL byte would silently cut the text short */
    CHECK(write_profile(path, 1000, 1) == 0);
    CHECK(kp_profile_load_file(path, &p, err, sizeof err) == -1 && strstr(err, "NUL") && p.count == 0);
    unlink(path);
    /* a directory is reported as one */
    CHECK(kp_profile_load_file(dir, &p, err, sizeof err) == -1 && strstr(err, "is a directory") &&
          strstr(err, dir) && !strstr(err, "larger"));
    CHECK(kp_profile_load_file("/dev/null", &p, err, sizeof err) == -1 && strstr(err, "not a regular file"));
    rmdir(dir);
}

static void test_profile(void)
{
    kp_profile p;
    char err[256], out[512];
    uint8_t *rdram = calloc(1, KP_RDRAM_SIZE);
    /* N64 big-endian bytes 12 34 56 78 at 0x100, stored as a host-endian word */
    uint32_t w = 0x12345678u, f;
    float one = 1.5f;

    memcpy(rdram + 0x100, &w, 4);
    memcpy(&f, &one, 4);
    memcpy(rdram + 0x104, &f, 4);
    CHECK(kp_profile_parse("w:0x80000100:u32;b0:0x80000100:u8;b3:0xA0000103:u8;h:0x80000102:u16;"
                           "s:0x100:s8;fl:0x80000104:f32",
                           &p, err, sizeof err) == 0);
    CHECK(p.count == 6);
    kp_profile_format(&p, rdram, out, sizeof out);
    CHECK(strcmp(out, "w=305419896;b0=18;b3=120;h=22136;s=18;fl=1.5") == 0);
    if (strcmp(out, "w=305419896;b0=18;b3=120;h=22136;s=18;fl=1.5") != 0)
        fprintf(stderr, "  got %s\n", out);
    CHECK(kp_profile_parse("# comment\nspeed 0x80000104 f32\n\nlap 0x80000100 u8 # tail\n", &p, err,
                           sizeof err) == 0 && p.count == 2);
    CHECK(kp_profile_parse("bad:0x80000101:u32", &p, err, sizeof err) == -1 && strstr(err, "bad") != NULL);
    CHECK(kp_profile_parse("x:0x80900000:u8", &p, err, sizeof err) == -1);
    /* only physical, KSEG0 and KSEG1 addresses inside the 8 MiB: no aliasing */
    CHECK(kp_profile_parse("x:0x20000000:u8", &p, err, sizeof err) == -1 && strstr(err, "0x20000000") &&
          strstr(err, "outside RDRAM"));
    CHECK(kp_profile_parse("x:0x40000100:u32", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0x60000000:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0xC0000000:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0xE0000100:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0x9F800000:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0x00800000:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("x:0x807FFFFE:u32", &p, err, sizeof err) == -1 && strstr(err, "outside RDRAM"));
    CHECK(kp_profile_parse("x:0x80000002:u32", &p, err, sizeof err) == -1 && strstr(err, "not aligned"));
    CHECK(kp_profile_parse("a:0x00000000:u8;b:0x007FFFFC:u32;c:0x807FFFFC:f32;d:0xA07FFFFF:s8;e:0x80000000:u16",
                           &p, err, sizeof err) == 0 && p.count == 5);
    CHECK(p.fields[0].phys == 0 && p.fields[1].phys == 0x7FFFFC && p.fields[2].phys == 0x7FFFFC &&
          p.fields[3].phys == 0x7FFFFF && p.fields[4].phys == 0);
    CHECK(kp_profile_parse("x:zz:u8", &p, err, sizeof err) == -1 && strstr(err, "zz") != NULL);
    CHECK(kp_profile_parse("x:0x80000000:u64", &p, err, sizeof err) == -1 && strstr(err, "u64") != NULL);
    CHECK(kp_profile_parse("na me=:0x80000000:u8", &p, err, sizeof err) == -1);
    CHECK(kp_profile_parse("", &p, err, sizeof err) == 0 && p.count == 0);
    {
        char path[] = "/tmp/kp_unit_profileXXXXXX";
        int fd = mkstemp(path);
        FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
        CHECK(fp != NULL);
        if (fp) {
            fputs("# race state\nw 0x80000100 u32\nfl: 0x80000104: f32\n", fp);
            fclose(fp);
            CHECK(kp_profile_load_file(path, &p, err, sizeof err) == 0 && p.count == 2);
            kp_profile_format(&p, rdram, out, sizeof out);
            CHECK(strcmp(out, "w=305419896;fl=1.5") == 0);
            unlink(path);
        }
        CHECK(kp_profile_load_file("/nonexistent/profile.txt", &p, err, sizeof err) == -1 &&
              strstr(err, "/nonexistent/profile.txt") != NULL);
    }
    test_profile_file_limits();
    CHECK(kp_profile_format(&p, NULL, out, sizeof out) == 0);
    free(rdram);
}

static void test_frame(void)
{
    /* 2x2 source, bottom row first: bottom = (10,20,30),(40,50,60) top = (1,2,3),(4,5,6) */
    uint8_t src[12] = { 10, 20, 30, 40, 50, 60, 1, 2, 3, 4, 5, 6 };
    uint8_t dst[12], one[3];
    kp_frame_convert(src, 2, 2, dst, 2, 2);
    CHECK(dst[0] == 1 && dst[3] == 4 && dst[6] == 10 && dst[9] == 40);
    kp_frame_convert(src, 2, 2, one, 1, 1);
    CHECK(one[0] == 14 && one[1] == 19 && one[2] == 25); /* box average, rounded */
}

/* A loopback listener on a free port (or a bound socket that does not
 * listen, so connecting to it is refused while we hold the port). */
static int loopback_socket(int listening, struct sockaddr_in *addr)
{
    socklen_t alen = sizeof *addr;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 ||
        getsockname(fd, (struct sockaddr *)addr, &alen) != 0 || (listening && listen(fd, 8) != 0)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Child process: accept n connections; on each read one request head and
 * write answers[i], then close. Returns the child's pid. */
static pid_t serve_answers(int lfd, const char *const *answers, int n)
{
    pid_t pid = fork();
    int i;
    if (pid != 0)
        return pid;
    alarm(20); /* never outlive a broken test */
    for (i = 0; i < n; i++) {
        char req[8192];
        size_t got = 0;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(1);
        while (got < sizeof req - 1) {
            ssize_t r = recv(fd, req + got, sizeof req - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        if (write(fd, answers[i], strlen(answers[i])) < 0)
            _exit(1);
        close(fd);
    }
    _exit(0);
}

static void test_http_addresses_and_backoff(void)
{
    struct sockaddr_in refused, served;
    struct addrinfo second, first;
    kp_http_conn *c = calloc(1, sizeof *c);
    kp_http_request req = { "GET", "/0", NULL, NULL, 0 };
    const char *answers[] = { "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"A_BUTTON\":1}",
                              "NOT HTTP\r\n\r\n" };
    const char *body;
    size_t blen;
    int status, rfd = loopback_socket(0, &refused), lfd = loopback_socket(1, &served), wstatus = -1;
    pid_t pid;

    CHECK(c && rfd >= 0 && lfd >= 0);
    if (!c || rfd < 0 || lfd < 0)
        return;
    /* the host resolved to two addresses; the first refuses connections */
    memset(&first, 0, sizeof first);
    memset(&second, 0, sizeof second);
    first.ai_family = second.ai_family = AF_INET;
    first.ai_socktype = second.ai_socktype = SOCK_STREAM;
    first.ai_addr = (struct sockaddr *)&refused;
    second.ai_addr = (struct sockaddr *)&served;
    first.ai_addrlen = second.ai_addrlen = sizeof refused;
    first.ai_next = &second;
    kp_http_init_list(c, "localhost:1", &first, 60000, 60000);
    CHECK(c->naddrs == 2);

    pid = serve_answers(lfd, answers, 2);
    CHECK(pid > 0);
    CHECK(kp_http_exchange(c, &req, 5000, &body, &blen, &status) == KP_HTTP_OK && status == 200 &&
          blen == 14 && memcmp(body, "{\"A_BUTTON\":1}", 14) == 0);
    CHECK(c->cur == 1 && c->connects == 1);
    kp_http_answer_used(c);
    /* the server closed that connection; the next one goes to the same
     * address and answers garbage: the plugin backs off instead of opening
     * a new connection on every poll */
    CHECK(kp_http_exchange(c, &req, 5000, &body, &blen, &status) == KP_HTTP_MALFORMED);
    CHECK(c->connects == 2 && c->fd < 0);
    CHECK(kp_http_exchange(c, &req, 5000, &body, &blen, &status) == KP_HTTP_BACKOFF);
    CHECK(kp_http_exchange(c, &req, 5000, &body, &blen, &status) == KP_HTTP_BACKOFF);
    CHECK(c->connects == 2);
    if (pid > 0) {
        waitpid(pid, &wstatus, 0);
        CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    }
    /* the wait doubles with each failure up to the maximum; a used answer resets it */
    first.ai_next = NULL;
    kp_http_init_list(c, "localhost:1", &first, 10, 40);
    {
        const int expect[] = { 20, 40, 40 };
        int k;
        for (k = 0; k < 3; k++) {
            struct timespec ts = { 0, 60 * 1000000L }; /* past any wait here */
            CHECK(kp_http_exchange(c, &req, 1000, &body, &blen, &status) == KP_HTTP_CONNECT);
            CHECK(c->backoff_ms == expect[k]);
            CHECK(kp_http_exchange(c, &req, 1000, &body, &blen, &status) == KP_HTTP_BACKOFF);
            nanosleep(&ts, NULL);
        }
    }
    kp_http_answer_used(c);
    CHECK(c->backoff_ms == 10 && c->next_attempt_ms == 0);
    kp_http_close(c);
    close(rfd);
    close(lfd);
    free(c);
}

int main(void)
{
    test_http();
    test_http_addresses_and_backoff();
    test_input();
    test_profile();
    test_frame();
    printf("kp_unit: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
