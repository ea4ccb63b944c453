/* JSON body parsing with json-c; depth-limited, length-bounded, and tolerant
 * of missing keys (they read 0), like mupen64plus-input-bot servers expect. */
#include "kp_input.h"

#include <json.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Bit positions in the core's BUTTONS union (m64p_plugin.h). */
static const struct {
    const char *key;
    int bit;
} k_buttons[] = {
    { "R_DPAD", 0 },    { "L_DPAD", 1 },    { "D_DPAD", 2 },    { "U_DPAD", 3 },
    { "START_BUTTON", 4 }, { "Z_TRIG", 5 }, { "B_BUTTON", 6 },  { "A_BUTTON", 7 },
    { "R_CBUTTON", 8 }, { "L_CBUTTON", 9 }, { "D_CBUTTON", 10 }, { "U_CBUTTON", 11 },
    { "R_TRIG", 12 },   { "L_TRIG", 13 },
};

/* Number from a JSON value; strings, arrays, objects read as 0. */
static double json_number(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_int: return (double)json_object_get_int64(v);
    case json_type_double: {
        double d = json_object_get_double(v);
        return isfinite(d) ? d : 0.0;
    }
    case json_type_boolean: return json_object_get_boolean(v) ? 1.0 : 0.0;
    default: return 0.0;
    }
}

static int axis_value(struct json_object *obj, const char *key)
{
    struct json_object *v;
    double d;
    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    d = json_number(v);
    d = d < 0 ? ceil(d - 0.5) : floor(d + 0.5);
    if (d > 127)
        return 127;
    if (d < -128)
        return -128;
    return (int)d;
}

/* A JSON string equal to word, byte for byte and in length. */
static int string_is(struct json_object *v, const char *word)
{
    size_t n = strlen(word);
    return json_object_get_string_len(v) == (int)n && memcmp(json_object_get_string(v), word, n) == 0;
}

int kp_input_parse(const char *body, size_t len, uint32_t *buttons, kp_cmd *cmd, int64_t *cmd_id)
{
    struct json_tokener *tok;
    struct json_object *obj, *v;
    uint32_t value = 0;
    size_t i, end;
    int x, y;

    *buttons = 0;
    *cmd = KP_CMD_NONE;
    *cmd_id = 0;
    if (len == 0 || len > 65536)
        return -1;
    tok = json_tokener_new_ex(8);
    if (!tok)
        return -1;
    obj = json_tokener_parse_ex(tok, body, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success || !obj) {
        json_tokener_free(tok);
        if (obj)
            json_object_put(obj);
        return -1;
    }
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    for (i = end; i < len; i++) { /* only whitespace may follow the object */
        if (body[i] != ' ' && body[i] != '\n' && body[i] != '\r' && body[i] != '\t') {
            json_object_put(obj);
            return -1;
        }
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return -1;
    }

    for (i = 0; i < sizeof k_buttons / sizeof k_buttons[0]; i++) {
        if (json_object_object_get_ex(obj, k_buttons[i].key, &v) && json_number(v) != 0.0)
            value |= 1u << k_buttons[i].bit;
    }
    x = axis_value(obj, "X_AXIS");
    y = axis_value(obj, "Y_AXIS");
    value |= ((uint32_t)(uint8_t)(int8_t)x) << 16;
    value |= ((uint32_t)(uint8_t)(int8_t)y) << 24;

    if (json_object_object_get_ex(obj, "CMD", &v) && json_object_is_type(v, json_type_string)) {
        if (string_is(v, "reset"))
            *cmd = KP_CMD_RESET;
        else if (string_is(v, "save"))
            *cmd = KP_CMD_SAVE;
        else if (json_object_get_string_len(v) > 0)
            *cmd = KP_CMD_UNKNOWN;
    }
    if (json_object_object_get_ex(obj, "CMD_ID", &v)) {
        /* json-c saturates integers beyond int64 to INT64_MIN/INT64_MAX */
        int64_t id = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
        *cmd_id = id > 0 && id < INT64_MAX ? id : -1;
    }
    json_object_put(obj);
    *buttons = value;
    return 0;
}
