/* Unit tests of the plugin's pure parts: HTTP response framing, the JSON
 * answer, telemetry profiles (byte order) and the frame flip/downscale. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    /* bytes beyond the body: answer used, connection not reused */
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk", 0, &st, &off, &len, &ka) == 1 && ka == 0);
    CHECK(parse("HTTP/1.1 500 Internal\r\nContent-Length: 2\r\n\r\n{}", 0, &st, &off, &len, &ka) == 1 && st == 500);
}

static void test_input(void)
{
    uint32_t v;
    kp_cmd cmd;
    const char *full = "{\"START_BUTTON\":0,\"Z_TRIG\":0,\"B_BUTTON\":1,\"A_BUTTON\":1,\"R_TRIG\":1,\"L_TRIG\":0,"
                       "\"U_DPAD\":0,\"D_DPAD\":0,\"L_DPAD\":0,\"R_DPAD\":0,\"U_CBUTTON\":0,\"D_CBUTTON\":0,"
                       "\"L_CBUTTON\":0,\"R_CBUTTON\":0,\"X_AXIS\":-80,\"Y_AXIS\":80}";

    CHECK(kp_input_parse(full, strlen(full), &v, &cmd) == 0 && cmd == KP_CMD_NONE);
    CHECK((v & 0xffff) == ((1u << 6) | (1u << 7) | (1u << 12)));
    CHECK((int8_t)((v >> 16) & 0xff) == -80 && (int8_t)(v >> 24) == 80);
    CHECK(kp_input_parse("{}", strlen("{}"), &v, &cmd) == 0 && v == 0);
    CHECK(kp_input_parse("{\"X_AXIS\": 1000, \"Y_AXIS\": -1000.7}", strlen("{\"X_AXIS\": 1000, \"Y_AXIS\": -1000.7}"), &v, &cmd) == 0);
    CHECK((int8_t)((v >> 16) & 0xff) == 127 && (int8_t)(v >> 24) == -128);
    CHECK(kp_input_parse("{\"X_AXIS\": 12.6}", strlen("{\"X_AXIS\": 12.6}"), &v, &cmd) == 0 && (int8_t)((v >> 16) & 0xff) == 13);
    CHECK(kp_input_parse("{\"A_BUTTON\": \"yes\", \"B_BUTTON\": true}", strlen("{\"A_BUTTON\": \"yes\", \"B_BUTTON\": true}"), &v, &cmd) == 0 && v == (1u << 6));
    CHECK(kp_input_parse("{\"A_BUTTON\": 1, \"CMD\": \"reset\"}", strlen("{\"A_BUTTON\": 1, \"CMD\": \"reset\"}"), &v, &cmd) == 0 && cmd == KP_CMD_RESET &&
          v == (1u << 7));
    CHECK(kp_input_parse("{\"CMD\": \"save\"}", strlen("{\"CMD\": \"save\"}"), &v, &cmd) == 0 && cmd == KP_CMD_SAVE);
    CHECK(kp_input_parse("{\"CMD\": \"explode\"}", strlen("{\"CMD\": \"explode\"}"), &v, &cmd) == 0 && cmd == KP_CMD_UNKNOWN);
    /* garbage -> -1 and neutral */
    CHECK(kp_input_parse("{\"A_BUTTON\": 1", strlen("{\"A_BUTTON\": 1"), &v, &cmd) == -1 && v == 0);
    CHECK(kp_input_parse("[1, 2]", strlen("[1, 2]"), &v, &cmd) == -1 && v == 0);
    CHECK(kp_input_parse("{\"A_BUTTON\": 1} trailing", strlen("{\"A_BUTTON\": 1} trailing"), &v, &cmd) == -1);
    CHECK(kp_input_parse("{\"A_BUTTON\": 1}\r\n", strlen("{\"A_BUTTON\": 1}\r\n"), &v, &cmd) == 0 && v == (1u << 7));
    CHECK(kp_input_parse("", strlen(""), &v, &cmd) == -1);
    CHECK(kp_input_parse("{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}", strlen("{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}"), &v, &cmd) == -1);
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

int main(void)
{
    test_http();
    test_input();
    test_profile();
    test_frame();
    printf("kp_unit: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
