#include "kp_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static kp_log_fn g_sink;
static void *g_sink_ctx;

uint64_t kp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t kp_now_ms(void)
{
    return kp_now_us() / 1000u;
}

void kp_log_set_sink(kp_log_fn fn, void *context)
{
    g_sink = fn;
    g_sink_ctx = context;
}

void kp_log(int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_sink)
        g_sink(g_sink_ctx, level, msg);
    else
        fprintf(stderr, "KartPilot: %s\n", msg);
}
