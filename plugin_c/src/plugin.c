/* KartPilot input plugin: the mupen64plus Input Plugin API (m64p_plugin.h).
 * Each poll of a plugged controller asks the drive server for that
 * controller's input over HTTP/1.1 keep-alive, optionally handing over the
 * current frame and RDRAM telemetry; failures always read as neutral. */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M64P_PLUGIN_PROTOTYPES 1
#include "m64p_common.h"
#include "m64p_debugger.h"
#include "m64p_frontend.h"
#include "m64p_plugin.h"
#include "m64p_types.h"

#include "kp_config.h"
#include "kp_frame.h"
#include "kp_http.h"
#include "kp_input.h"
#include "kp_stats.h"
#include "kp_util.h"

#define KP_PLUGIN_VERSION 0x010000
#define KP_INPUT_API_VERSION 0x020101 /* the 2.5.9 core refuses < 0x020100 */
#define KP_PLUGIN_NAME "KartPilot Input Plugin"
#define KP_LOG_EVERY_MS 5000
#define KP_REASON_JSON 100 /* failure reason beyond kp_http_result: bad body */

typedef struct {
    kp_settings cfg;
    kp_http_conn http;
    kp_stats stats;
    uint8_t *out;          /* converted frame for this controller's size */
    size_t out_cap;
    int out_w, out_h;
    unsigned long out_index; /* frame index held in out (+1; 0 = none) */
    int last_reason;       /* last failure logged; 0 = healthy */
    uint64_t last_log_ms;
    unsigned long suppressed, consecutive;
    int64_t done_id;       /* CMD_ID of the last command carried out (0 = none yet) */
    int64_t warned_id;     /* CMD_ID last warned about (refused, unknown), to warn once */
    uint64_t cmd_warn_ms;  /* last warning about an ignored CMD without a usable CMD_ID */
    int start_tries;       /* load_savestate: polls that tried to load it; -1 = done */
} kp_controller;

/* Polls that may try load_savestate before it is given up (the core refuses while not running). */
#define KP_START_STATE_TRIES 120

static int g_started;
static int g_rom_open;
static void *g_debug_ctx;
static void (*g_debug_cb)(void *, int, const char *);
static ptr_CoreDoCommand p_do_command;
static ptr_DebugMemGetPointer p_mem_pointer;
static CONTROL *g_controls;
static kp_controller g_ctl[4];
static int g_any_frame;
static int g_limiter_applied;
static const uint8_t *g_rdram;

/* Latest screen grab, bottom-up as the core returns it. */
static uint8_t *g_raw;
static size_t g_raw_cap;
static int g_raw_w, g_raw_h;
static unsigned long g_renders;     /* frames rendered (RenderCallback calls) */
static unsigned long g_raw_index;   /* index of the frame in g_raw, +1 (0 = none) */
static unsigned long g_captures;
static uint64_t g_capture_us, g_capture_max_us;

static void log_sink(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (g_debug_cb)
        g_debug_cb(g_debug_ctx, level, msg);
}

EXPORT m64p_error CALL PluginStartup(m64p_dynlib_handle CoreLibHandle, void *Context,
                                     void (*DebugCallback)(void *, int, const char *))
{
    ptr_CoreGetAPIVersions get_versions;
    int config_api = 0, debug_api = 0, vidext_api = 0, core_api = 0, i;

    if (g_started)
        return M64ERR_ALREADY_INIT;
    g_debug_cb = DebugCallback;
    g_debug_ctx = Context;
    kp_log_set_sink(DebugCallback ? log_sink : NULL, NULL);

    get_versions = (ptr_CoreGetAPIVersions)dlsym(CoreLibHandle, "CoreGetAPIVersions");
    if (get_versions && get_versions(&core_api, &config_api, &debug_api, &vidext_api) == M64ERR_SUCCESS &&
        (config_api & 0xffff0000) != 0x020000) {
        kp_log(KP_LOG_ERROR, "core config API 0x%06x is not 2.x; cannot start", config_api);
        return M64ERR_INCOMPATIBLE;
    }
    if (kp_config_bind(CoreLibHandle) != 0) {
        kp_log(KP_LOG_ERROR, "core library lacks the config functions; cannot start");
        return M64ERR_INCOMPATIBLE;
    }
    p_do_command = (ptr_CoreDoCommand)dlsym(CoreLibHandle, "CoreDoCommand");
    p_mem_pointer = (ptr_DebugMemGetPointer)dlsym(CoreLibHandle, "DebugMemGetPointer");
    for (i = 0; i < 4; i++) { /* static storage starts at fd 0, which is stdin */
        memset(&g_ctl[i].http, 0, sizeof g_ctl[i].http);
        g_ctl[i].http.fd = -1;
    }
    kp_config_defaults();
    g_started = 1;
    return M64ERR_SUCCESS;
}

EXPORT m64p_error CALL PluginShutdown(void)
{
    int i;
    if (!g_started)
        return M64ERR_NOT_INIT;
    for (i = 0; i < 4; i++) {
        kp_http_close(&g_ctl[i].http);
        free(g_ctl[i].out);
        g_ctl[i].out = NULL;
        g_ctl[i].out_cap = 0;
    }
    free(g_raw);
    g_raw = NULL;
    g_raw_cap = 0;
    g_started = 0;
    kp_log_set_sink(NULL, NULL);
    g_debug_cb = NULL;
    return M64ERR_SUCCESS;
}

EXPORT m64p_error CALL PluginGetVersion(m64p_plugin_type *PluginType, int *PluginVersion, int *APIVersion,
                                        const char **PluginNamePtr, int *Capabilities)
{
    if (PluginType)
        *PluginType = M64PLUGIN_INPUT;
    if (PluginVersion)
        *PluginVersion = KP_PLUGIN_VERSION;
    if (APIVersion)
        *APIVersion = KP_INPUT_API_VERSION;
    if (PluginNamePtr)
        *PluginNamePtr = KP_PLUGIN_NAME;
    if (Capabilities)
        *Capabilities = 0;
    return M64ERR_SUCCESS;
}

EXPORT void CALL InitiateControllers(CONTROL_INFO ControlInfo)
{
    int i;
    g_controls = ControlInfo.Controls;
    g_any_frame = 0;
    for (i = 0; i < 4; i++) {
        kp_controller *c = &g_ctl[i];
        kp_http_close(&c->http);
        kp_config_read(i, &c->cfg);
        if (g_controls) {
            g_controls[i].Present = c->cfg.plugged;
            g_controls[i].RawData = 0;
            g_controls[i].Plugin = PLUGIN_NONE;
        }
        if (c->cfg.plugged) {
            g_any_frame |= c->cfg.frame;
            kp_log(KP_LOG_INFO,
                   "controller %d: drive server http://%s:%d/%d, timeout %d ms, %s, %d telemetry value(s)", i,
                   c->cfg.host, c->cfg.port, i, c->cfg.timeout_ms, c->cfg.frame ? "posting frames" : "GET",
                   c->cfg.profile.count);
        }
    }
}

EXPORT int CALL RomOpen(void)
{
    int i;
    g_rdram = NULL;
    g_limiter_applied = 0;
    g_renders = 0;
    g_raw_index = 0;
    g_captures = 0;
    g_capture_us = g_capture_max_us = 0;
    for (i = 0; i < 4; i++) {
        kp_controller *c = &g_ctl[i];
        memset(&c->stats, 0, sizeof c->stats);
        c->last_reason = 0;
        c->suppressed = c->consecutive = 0;
        c->out_index = 0;
        c->done_id = c->warned_id = 0;
        c->cmd_warn_ms = 0;
        c->start_tries = 0;
        if (c->cfg.plugged)
            kp_http_init(&c->http, c->cfg.host, c->cfg.port, c->cfg.reconnect_ms, c->cfg.reconnect_max_ms);
    }
    g_rom_open = 1;
    return 1;
}

EXPORT void CALL RomClosed(void)
{
    int i;
    for (i = 0; i < 4; i++) {
        kp_controller *c = &g_ctl[i];
        if (!c->cfg.plugged)
            continue;
        if (c->stats.polls)
            kp_log(KP_LOG_INFO, "controller %d: %lu polls, %lu answered, %lu neutral, %lu connection(s), p99 %.2f ms",
                   i, c->stats.polls, c->stats.ok, c->stats.failed, c->http.connects,
                   kp_stats_quantile_ms(&c->stats, 0.99));
        c->stats.captures = g_captures;
        c->stats.capture_us = g_capture_us;
        c->stats.capture_max_us = g_capture_max_us;
        if (c->cfg.stats_file[0] && kp_stats_write(&c->stats, i, c->http.connects, c->cfg.stats_file) != 0)
            kp_log(KP_LOG_WARNING, "controller %d: cannot write stats_file '%s'", i, c->cfg.stats_file);
        kp_http_close(&c->http);
    }
    g_rom_open = 0;
    g_rdram = NULL;
}

/* Grab the screen through the core into g_raw (bottom-up rows). */
static void capture_screen(int front)
{
    int size = 0, w, h;
    size_t need;
    uint64_t t0 = kp_now_us(), dt;
    if (!p_do_command || p_do_command(M64CMD_CORE_STATE_QUERY, M64CORE_VIDEO_SIZE, &size) != M64ERR_SUCCESS)
        return;
    w = (size >> 16) & 0xffff;
    h = size & 0xffff;
    if (w <= 0 || h <= 0 || w > 8192 || h > 8192)
        return;
    need = (size_t)w * (size_t)h * 3;
    if (need > g_raw_cap) {
        uint8_t *p = realloc(g_raw, need);
        if (!p)
            return;
        g_raw = p;
        g_raw_cap = need;
    }
    if (p_do_command(M64CMD_READ_SCREEN, front, g_raw) != M64ERR_SUCCESS)
        return;
    g_raw_w = w;
    g_raw_h = h;
    g_raw_index = g_renders + 1;
    dt = kp_now_us() - t0;
    g_captures++;
    g_capture_us += dt;
    if (dt > g_capture_max_us)
        g_capture_max_us = dt;
}

/* Called by the core once per rendered frame, with the finished picture in
 * the back buffer and the GL context current: the right moment to read it. */
EXPORT void CALL RenderCallback(void)
{
    g_renders++;
    if (g_rom_open && g_any_frame)
        capture_screen(0);
}

static const char *reason_name(int reason)
{
    return reason == KP_REASON_JSON ? "answered an unreadable JSON body" : kp_http_result_name((kp_http_result)reason);
}

/* One log line per change of failure reason, then at most one per
 * KP_LOG_EVERY_MS while it persists, so a dead server cannot flood the log. */
static void log_failure(int n, kp_controller *c, int reason)
{
    uint64_t now = kp_now_ms();
    c->consecutive++;
    if (reason == KP_HTTP_BACKOFF && c->last_reason)
        reason = c->last_reason; /* still the failure that caused the backoff */
    if (reason != c->last_reason || now - c->last_log_ms >= KP_LOG_EVERY_MS) {
        kp_log(KP_LOG_WARNING, "controller %d: http://%s:%d/%d %s; neutral input (%lu more since last message)", n,
               c->cfg.host, c->cfg.port, n, reason_name(reason), c->suppressed);
        c->last_reason = reason;
        c->last_log_ms = now;
        c->suppressed = 0;
    } else {
        c->suppressed++;
    }
}

/* Hand a command to the core; 1 when the core queued it. id is its CMD_ID
 * (0 for an older server); a refusal is logged once per id. */
static int run_command(int n, kp_controller *c, kp_cmd cmd, int64_t id)
{
    const char *path = c->cfg.savestate[0] ? c->cfg.savestate : NULL;
    m64p_error rc;
    char idtext[32] = "";
    if (!p_do_command)
        return 0;
    /* Both commands are queued by the core and run at the next VI, so they
     * are safe to issue from the emulation thread inside GetKeys. */
    if (cmd == KP_CMD_RESET)
        rc = p_do_command(M64CMD_STATE_LOAD, 0, (void *)path);
    else
        rc = p_do_command(M64CMD_STATE_SAVE, path ? 1 : 0, (void *)path);
    if (id > 0)
        snprintf(idtext, sizeof idtext, " CMD_ID %" PRId64, id);
    if (rc == M64ERR_SUCCESS) {
        c->stats.commands++;
    } else {
        if (id > 0 && id == c->warned_id)
            return 0;
        c->warned_id = id;
    }
    kp_log(rc == M64ERR_SUCCESS ? KP_LOG_INFO : KP_LOG_WARNING, "controller %d: CMD %s%s (%s) -> %s", n,
           cmd == KP_CMD_RESET ? "reset: load state" : "save: save state", idtext, path ? path : "current slot",
           rc == M64ERR_SUCCESS ? "queued" : "refused by the core; not confirmed, tried again on the next answer");
    return rc == M64ERR_SUCCESS;
}

/* Rate limit for warnings that have no id to remember: one per KP_LOG_EVERY_MS. */
static int cmd_warn_due(kp_controller *c)
{
    uint64_t now = kp_now_ms();
    if (c->cmd_warn_ms != 0 && now - c->cmd_warn_ms < KP_LOG_EVERY_MS)
        return 0;
    c->cmd_warn_ms = now;
    return 1;
}

/* The command in a usable answer (see plugin_c/README.md, "Commands"). With a
 * CMD_ID, a command is carried out once: the id is remembered and every later
 * request confirms it with X-KartPilot-Done, while the server keeps sending
 * the command until it sees that confirmation. */
static void handle_command(int n, kp_controller *c, kp_cmd cmd, int64_t id)
{
    if (cmd == KP_CMD_NONE)
        return;
    if (id < 0) {
        if (cmd_warn_due(c))
            kp_log(KP_LOG_WARNING, "controller %d: CMD ignored: CMD_ID is not a positive integer", n);
        return;
    }
    if (cmd == KP_CMD_UNKNOWN) {
        if (id > 0 ? id != c->warned_id : cmd_warn_due(c))
            kp_log(KP_LOG_WARNING, "controller %d: unknown CMD ignored (expected exactly \"reset\" or \"save\")", n);
        if (id > 0)
            c->warned_id = id;
        return;
    }
    if (id == 0) { /* an older server: once per answer, as it asks */
        run_command(n, c, cmd, 0);
        return;
    }
    if (id == c->done_id)
        return; /* already carried out; the server has not seen our confirmation yet */
    if (run_command(n, c, cmd, id))
        c->done_id = id;
}

/* load_savestate: the start state is loaded from the first poll, where the core runs and the
 * load is queued for the next VI like CMD reset's, instead of by the core's --savestate at boot
 * (which hangs the cached interpreter and the dynamic recompiler on some ROMs). */
static void load_start_state(int n, kp_controller *c)
{
    if (run_command(n, c, KP_CMD_RESET, 0)) {
        c->start_tries = -1;
        return;
    }
    if (++c->start_tries >= KP_START_STATE_TRIES) {
        kp_log(KP_LOG_ERROR, "controller %d: the core refused to load the start savestate %s %d times; "
               "running on without it", n, c->cfg.savestate, c->start_tries);
        c->start_tries = -1;
    }
}

static void apply_speed_limiter(void)
{
    int i, off = 0, zero = 0;
    g_limiter_applied = 1;
    for (i = 0; i < 4; i++)
        if (g_ctl[i].cfg.plugged && !g_ctl[i].cfg.speed_limiter)
            off = 1;
    if (off && p_do_command) {
        if (p_do_command(M64CMD_CORE_STATE_SET, M64CORE_SPEED_LIMITER, &zero) == M64ERR_SUCCESS)
            kp_log(KP_LOG_INFO, "speed limiter off (speed_limiter = False)");
        else
            kp_log(KP_LOG_WARNING, "the core refused to turn the speed limiter off");
    }
}

/* Convert the latest grab to this controller's size; 1 if a frame is ready. */
static int prepare_frame(kp_controller *c)
{
    int w, h;
    size_t need;
    if (!g_raw_index)
        return 0;
    if (c->out_index == g_raw_index)
        return 1;
    w = c->cfg.frame_width ? c->cfg.frame_width : g_raw_w;
    h = c->cfg.frame_height ? c->cfg.frame_height : g_raw_h;
    need = (size_t)w * (size_t)h * 3;
    if (need > c->out_cap) {
        uint8_t *p = realloc(c->out, need);
        if (!p)
            return 0;
        c->out = p;
        c->out_cap = need;
    }
    kp_frame_convert(g_raw, g_raw_w, g_raw_h, c->out, w, h);
    c->out_w = w;
    c->out_h = h;
    c->out_index = g_raw_index;
    return 1;
}

EXPORT void CALL GetKeys(int Control, BUTTONS *Keys)
{
    kp_controller *c;
    kp_http_request req;
    char path[16], headers[5120], tele[4096];
    const char *body;
    size_t body_len, hl = 0;
    int status;
    uint64_t t0;
    kp_http_result r;

    if (!Keys)
        return;
    Keys->Value = 0; /* neutral unless the server answers properly */
    if (Control < 0 || Control > 3 || !g_rom_open)
        return;
    c = &g_ctl[Control];
    if (!c->cfg.plugged)
        return;
    t0 = kp_now_us();
    if (!g_limiter_applied)
        apply_speed_limiter();
    if (c->start_tries >= 0 && c->cfg.load_savestate && c->cfg.savestate[0])
        load_start_state(Control, c);

    headers[0] = '\0';
    if (c->done_id > 0)
        hl += (size_t)snprintf(headers, sizeof headers, "X-KartPilot-Done: %" PRId64 "\r\n", c->done_id);
    if (c->cfg.profile.count) {
        if (!g_rdram && p_mem_pointer)
            g_rdram = p_mem_pointer(M64P_DBG_PTR_RDRAM);
        if (kp_profile_format(&c->cfg.profile, g_rdram, tele, sizeof tele))
            hl += (size_t)snprintf(headers + hl, sizeof headers - hl, "X-Telemetry: %s\r\n", tele);
    }
    snprintf(path, sizeof path, "/%d", Control);
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.path = path;
    if (c->cfg.frame) {
        /* No render callback yet (some video plugins never call it): read
         * the front buffer directly so frames still flow. */
        if (g_renders == 0)
            capture_screen(1);
        if (prepare_frame(c)) {
            snprintf(headers + hl, sizeof headers - hl, "X-Frame: %dx%dx3\r\nX-Frame-Index: %lu\r\n", c->out_w,
                     c->out_h, c->out_index - 1);
            req.method = "POST";
            req.body = c->out;
            req.body_len = (size_t)c->out_w * (size_t)c->out_h * 3;
        }
    }
    req.headers = headers;

    r = kp_http_exchange(&c->http, &req, c->cfg.timeout_ms, &body, &body_len, &status);
    c->stats.polls++;
    if (r == KP_HTTP_OK) {
        uint32_t buttons;
        kp_cmd cmd;
        int64_t cmd_id;
        if (req.body_len)
            c->stats.frames_sent++;
        if (kp_input_parse(body, body_len, &buttons, &cmd, &cmd_id) == 0) {
            kp_http_answer_used(&c->http);
            Keys->Value = buttons;
            c->stats.ok++;
            if (c->last_reason) {
                kp_log(KP_LOG_INFO, "controller %d: server answering again after %lu neutral poll(s)", Control,
                       c->consecutive);
                c->last_reason = 0;
            }
            c->consecutive = 0;
            c->suppressed = 0;
            handle_command(Control, c, cmd, cmd_id);
        } else {
            kp_http_answer_unusable(&c->http);
            c->stats.failed++;
            log_failure(Control, c, KP_REASON_JSON);
        }
    } else {
        if (r == KP_HTTP_STATUS && req.body_len)
            c->stats.frames_sent++;
        c->stats.failed++;
        log_failure(Control, c, (int)r);
    }
    kp_stats_add(&c->stats, kp_now_us() - t0);
}

EXPORT void CALL ControllerCommand(int Control, unsigned char *Command)
{
    (void)Control;
    (void)Command; /* raw data is off: the core emulates the controller */
}

EXPORT void CALL ReadController(int Control, unsigned char *Command)
{
    (void)Control;
    (void)Command;
}

EXPORT void CALL SDL_KeyDown(int keymod, int keysym)
{
    (void)keymod;
    (void)keysym;
}

EXPORT void CALL SDL_KeyUp(int keymod, int keysym)
{
    (void)keymod;
    (void)keysym;
}
