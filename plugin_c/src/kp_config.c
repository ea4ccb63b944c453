/* Settings through mupen64plus' config API, so `--set
 * Input-KartPilot-Control0[port]=8090` works from the command line. */
#include "kp_config.h"
#include "kp_util.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "m64p_config.h"

static ptr_ConfigOpenSection p_open;
static ptr_ConfigSetDefaultInt p_def_int;
static ptr_ConfigSetDefaultBool p_def_bool;
static ptr_ConfigSetDefaultString p_def_str;
static ptr_ConfigGetParamInt p_get_int;
static ptr_ConfigGetParamBool p_get_bool;
static ptr_ConfigGetParamString p_get_str;

int kp_config_bind(m64p_dynlib_handle core)
{
    p_open = (ptr_ConfigOpenSection)dlsym(core, "ConfigOpenSection");
    p_def_int = (ptr_ConfigSetDefaultInt)dlsym(core, "ConfigSetDefaultInt");
    p_def_bool = (ptr_ConfigSetDefaultBool)dlsym(core, "ConfigSetDefaultBool");
    p_def_str = (ptr_ConfigSetDefaultString)dlsym(core, "ConfigSetDefaultString");
    p_get_int = (ptr_ConfigGetParamInt)dlsym(core, "ConfigGetParamInt");
    p_get_bool = (ptr_ConfigGetParamBool)dlsym(core, "ConfigGetParamBool");
    p_get_str = (ptr_ConfigGetParamString)dlsym(core, "ConfigGetParamString");
    if (!p_open || !p_def_int || !p_def_bool || !p_def_str || !p_get_int || !p_get_bool || !p_get_str)
        return -1;
    return 0;
}

static m64p_handle open_section(int n)
{
    char name[64];
    m64p_handle h = NULL;
    snprintf(name, sizeof name, "Input-KartPilot-Control%d", n);
    if (!p_open || p_open(name, &h) != M64ERR_SUCCESS)
        return NULL;
    return h;
}

void kp_config_defaults(void)
{
    int n;
    for (n = 0; n < 4; n++) {
        m64p_handle h = open_section(n);
        if (!h)
            continue;
        p_def_bool(h, "plugged", n == 0, "Controller is plugged in and asks the drive server for input");
        p_def_str(h, "host", "127.0.0.1", "Drive server host (resolved once when the ROM starts)");
        p_def_int(h, "port", 8082, "Drive server TCP port");
        p_def_int(h, "timeout_ms", 50, "Longest wait per poll in ms; after it the controller reads neutral");
        p_def_int(h, "frame", 0, "0 = GET /<n> (server scrapes the screen), 1 = POST the frame as raw RGB");
        p_def_int(h, "frame_width", 0, "Width of posted frames (0 = native); downscaled in C");
        p_def_int(h, "frame_height", 0, "Height of posted frames (0 = native)");
        p_def_str(h, "profile", "", "Telemetry: 'name:address:type;...' (types u8 s8 u16 s16 u32 s32 f32)");
        p_def_str(h, "profile_file", "", "Telemetry profile file (same format, one entry per line)");
        p_def_str(h, "savestate", "", "Savestate file for CMD reset/save (empty = the core's current slot)");
        p_def_bool(h, "load_savestate", 0, "True loads savestate at the first poll after the ROM starts (the core's "
                   "--savestate at boot can hang its recompilers)");
        p_def_bool(h, "speed_limiter", 1, "False turns the core's speed limiter off (training)");
        p_def_int(h, "reconnect_ms", 100, "First delay before connecting again after a failure or unusable answer (doubles)");
        p_def_int(h, "reconnect_max_ms", 2000, "Longest delay between reconnect attempts");
        p_def_str(h, "stats_file", "", "Write poll statistics (JSON) here when the ROM closes");
    }
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

void kp_config_read(int n, kp_settings *s)
{
    m64p_handle h = open_section(n);
    char err[512];
    const char *prof, *prof_file;

    memset(s, 0, sizeof *s);
    copy_str(s->host, sizeof s->host, "127.0.0.1");
    s->port = 8082;
    s->timeout_ms = 50;
    s->speed_limiter = 1;
    s->reconnect_ms = 100;
    s->reconnect_max_ms = 2000;
    s->plugged = n == 0;
    if (!h)
        return;
    s->plugged = p_get_bool(h, "plugged");
    copy_str(s->host, sizeof s->host, p_get_str(h, "host"));
    s->port = clampi(p_get_int(h, "port"), 1, 65535);
    s->timeout_ms = clampi(p_get_int(h, "timeout_ms"), 1, 600000);
    s->frame = p_get_int(h, "frame") ? 1 : 0;
    s->frame_width = clampi(p_get_int(h, "frame_width"), 0, 4096);
    s->frame_height = clampi(p_get_int(h, "frame_height"), 0, 4096);
    copy_str(s->savestate, sizeof s->savestate, p_get_str(h, "savestate"));
    s->load_savestate = p_get_bool(h, "load_savestate");
    s->speed_limiter = p_get_bool(h, "speed_limiter");
    s->reconnect_ms = clampi(p_get_int(h, "reconnect_ms"), 1, 60000);
    s->reconnect_max_ms = clampi(p_get_int(h, "reconnect_max_ms"), s->reconnect_ms, 600000);
    copy_str(s->stats_file, sizeof s->stats_file, p_get_str(h, "stats_file"));
    if (s->host[0] == '\0')
        copy_str(s->host, sizeof s->host, "127.0.0.1");

    prof = p_get_str(h, "profile");
    prof_file = p_get_str(h, "profile_file");
    if (prof_file && prof_file[0]) {
        if (kp_profile_load_file(prof_file, &s->profile, err, sizeof err) != 0)
            kp_log(KP_LOG_ERROR, "Input-KartPilot-Control%d[profile_file]: %s", n, err);
    } else if (prof && prof[0]) {
        if (kp_profile_parse(prof, &s->profile, err, sizeof err) != 0)
            kp_log(KP_LOG_ERROR, "Input-KartPilot-Control%d[profile]: %s", n, err);
    }
}
