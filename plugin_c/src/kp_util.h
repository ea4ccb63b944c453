/* Small shared helpers: monotonic clock and logging through the core's
 * debug callback (so messages land where mupen64plus prints its own). */
#ifndef KP_UTIL_H
#define KP_UTIL_H

#include <stdint.h>

/* Milliseconds / microseconds on the monotonic clock. */
uint64_t kp_now_ms(void);
uint64_t kp_now_us(void);

/* Log levels match m64p_msg_level (1 error .. 5 verbose). */
enum { KP_LOG_ERROR = 1, KP_LOG_WARNING = 2, KP_LOG_INFO = 3, KP_LOG_STATUS = 4, KP_LOG_VERBOSE = 5 };

typedef void (*kp_log_fn)(void *context, int level, const char *message);

/* Install the core's debug callback (NULL falls back to stderr). */
void kp_log_set_sink(kp_log_fn fn, void *context);
void kp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
