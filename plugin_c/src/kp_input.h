/* The drive protocol's JSON answer -> N64 controller state. */
#ifndef KP_INPUT_H
#define KP_INPUT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KP_CMD_NONE = 0, KP_CMD_RESET, KP_CMD_SAVE, KP_CMD_UNKNOWN } kp_cmd;

/* Parse one response body. On success fills *buttons with the value of the
 * core's BUTTONS union (missing keys are 0, axes clamped to -128..127) and
 * *cmd, and returns 0. Any malformed body returns -1 with neutral buttons. */
int kp_input_parse(const char *body, size_t len, uint32_t *buttons, kp_cmd *cmd);

#endif
