#include "kp_stats.h"

#include <stdio.h>

void kp_stats_add(kp_stats *s, uint64_t us)
{
    uint64_t b = us / KP_STATS_BUCKET_US;
    s->hist[b < KP_STATS_BUCKETS ? b : KP_STATS_BUCKETS]++;
    s->total_us += us;
    if (us > s->max_us)
        s->max_us = us;
}

double kp_stats_quantile_ms(const kp_stats *s, double q)
{
    unsigned long n = 0, target, seen = 0;
    int i;
    for (i = 0; i <= KP_STATS_BUCKETS; i++)
        n += s->hist[i];
    if (n == 0)
        return 0.0;
    target = (unsigned long)(q * (double)n);
    if (target >= n)
        target = n - 1;
    for (i = 0; i <= KP_STATS_BUCKETS; i++) {
        seen += s->hist[i];
        if (seen > target)
            break;
    }
    if (i >= KP_STATS_BUCKETS)
        return (double)s->max_us / 1000.0;
    /* upper edge of the bucket: a conservative figure */
    return (double)((i + 1) * KP_STATS_BUCKET_US) / 1000.0;
}

int kp_stats_write(const kp_stats *s, int controller, unsigned long connects, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"controller\": %d, \"polls\": %lu, \"ok\": %lu, \"failed\": %lu, \"frames_sent\": %lu, "
            "\"commands\": %lu, \"connects\": %lu, \"latency_ms\": {\"mean\": %.4f, \"p50\": %.3f, "
            "\"p99\": %.3f, \"max\": %.3f}, \"captures\": %lu, \"capture_ms\": {\"mean\": %.4f, \"max\": %.3f}}\n",
            controller, s->polls, s->ok, s->failed, s->frames_sent, s->commands, connects,
            s->polls ? (double)s->total_us / 1000.0 / (double)s->polls : 0.0, kp_stats_quantile_ms(s, 0.5),
            kp_stats_quantile_ms(s, 0.99), (double)s->max_us / 1000.0, s->captures,
            s->captures ? (double)s->capture_us / 1000.0 / (double)s->captures : 0.0,
            (double)s->capture_max_us / 1000.0);
    return fclose(f) == 0 ? 0 : -1;
}
