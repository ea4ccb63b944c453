/* The drive protocol's JSON answer -> N64 controller state. */
#ifndef KP_INPUT_H
#define KP_INPUT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KP_CMD_NONE = 0, KP_CMD_RESET, KP_CMD_SAVE, KP_CMD_UNKNOWN } kp_cmd;

/* Parse one response body. On success fills *buttons with the value of the
 * core's BUTTONS union (missing keys are 0, axes clamped to -128..127), *cmd
 * and *cmd_id, and returns 0. Any malformed body returns -1 with neutral
 * buttons.
 *
 * CMD counts only when it is exactly "reset" or "save" (a string with
 * anything more, such as "reset\u0000x", is KP_CMD_UNKNOWN). *cmd_id is the
 * answer's CMD_ID: 0 when absent (an older server), -1 when present but not
 * a positive integer, else the id. */
int kp_input_parse(const char *body, size_t len, uint32_t *buttons, kp_cmd *cmd, int64_t *cmd_id);

#endif
