/* Poll latency statistics (for the benchmark and for diagnosing servers). */
#ifndef KP_STATS_H
#define KP_STATS_H

#include <stdint.h>

#define KP_STATS_BUCKET_US 10
#define KP_STATS_BUCKETS 20000 /* 10 us buckets up to 200 ms, then overflow */

typedef struct {
    unsigned long polls, ok, failed, frames_sent, commands;
    uint64_t total_us, max_us;
    unsigned long captures;           /* screen grabs (shared by all controllers) */
    uint64_t capture_us, capture_max_us;
    uint32_t hist[KP_STATS_BUCKETS + 1];
} kp_stats;

void kp_stats_add(kp_stats *s, uint64_t us);
/* Latency in ms at quantile q (0..1), resolution one bucket. */
double kp_stats_quantile_ms(const kp_stats *s, double q);
/* Write one controller's statistics as a JSON object to path. */
int kp_stats_write(const kp_stats *s, int controller, unsigned long connects, const char *path);

#endif
