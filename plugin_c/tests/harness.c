/* Test harness: loads the real mupen64plus core library and the plugin with
 * dlopen and drives the plugin the way the core does (PluginStartup with the
 * core's handle, InitiateControllers, RomOpen, GetKeys..., RomClosed,
 * PluginShutdown), so the plugin's config calls hit the real config API.
 *
 * Commands are read line by line from stdin, one JSON line is printed per
 * result, which lets a test change the server between polls:
 *     poll N [controller]   N GetKeys calls; one line each
 *     sleep MS
 *     quit
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m64p_common.h"
#include "m64p_config.h"
#include "m64p_frontend.h"
#include "m64p_plugin.h"
#include "m64p_types.h"

static void debug_cb(void *ctx, int level, const char *msg)
{
    fprintf(stderr, "[%s %d] %s\n", (const char *)ctx, level, msg);
    fflush(stderr);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void *need_sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "harness: symbol %s missing: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

/* --set Section[key]=value, typed by the parameter's existing type. */
static int apply_set(void *core, const char *spec)
{
    ptr_ConfigOpenSection open_section = (ptr_ConfigOpenSection)need_sym(core, "ConfigOpenSection");
    ptr_ConfigGetParameterType get_type = (ptr_ConfigGetParameterType)need_sym(core, "ConfigGetParameterType");
    ptr_ConfigSetParameter set_param = (ptr_ConfigSetParameter)need_sym(core, "ConfigSetParameter");
    char section[128], key[128];
    const char *lb = strchr(spec, '['), *rb = strchr(spec, ']');
    const char *value;
    m64p_handle h;
    m64p_type type = M64TYPE_STRING;
    int iv;

    if (!lb || !rb || rb < lb || rb[1] != '=' || (size_t)(lb - spec) >= sizeof section ||
        (size_t)(rb - lb - 1) >= sizeof key) {
        fprintf(stderr, "harness: bad --set '%s' (want Section[key]=value)\n", spec);
        return -1;
    }
    memcpy(section, spec, (size_t)(lb - spec));
    section[lb - spec] = '\0';
    memcpy(key, lb + 1, (size_t)(rb - lb - 1));
    key[rb - lb - 1] = '\0';
    value = rb + 2;
    if (open_section(section, &h) != M64ERR_SUCCESS)
        return -1;
    if (get_type(h, key, &type) != M64ERR_SUCCESS)
        type = M64TYPE_STRING;
    if (type == M64TYPE_INT || type == M64TYPE_BOOL) {
        iv = strcmp(value, "True") == 0 || strcmp(value, "true") == 0 ? 1 : atoi(value);
        return set_param(h, key, type, &iv) == M64ERR_SUCCESS ? 0 : -1;
    }
    if (type == M64TYPE_FLOAT) {
        float fv = (float)atof(value);
        return set_param(h, key, type, &fv) == M64ERR_SUCCESS ? 0 : -1;
    }
    return set_param(h, key, M64TYPE_STRING, value) == M64ERR_SUCCESS ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *plugin_path = NULL, *core_path = "libmupen64plus.so.2", *configdir = NULL;
    const char *sets[32];
    int nsets = 0, i;
    void *core, *plugin;
    ptr_CoreStartup core_startup;
    ptr_CoreShutdown core_shutdown;
    ptr_PluginGetVersion get_version;
    ptr_PluginStartup plugin_startup;
    ptr_PluginShutdown plugin_shutdown;
    ptr_InitiateControllers initiate;
    ptr_RomOpen rom_open;
    ptr_RomClosed rom_closed;
    ptr_GetKeys get_keys;
    m64p_plugin_type ptype;
    int pversion, api;
    const char *pname;
    CONTROL controls[4];
    CONTROL_INFO info;
    char line[256];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (strcmp(argv[i], "--core") == 0 && i + 1 < argc)
            core_path = argv[++i];
        else if (strcmp(argv[i], "--configdir") == 0 && i + 1 < argc)
            configdir = argv[++i];
        else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nsets < 32)
            sets[nsets++] = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s --plugin PATH [--core libmupen64plus.so.2] --configdir DIR "
                    "[--set Section[key]=value ...] < commands\n"
                    "commands: 'poll N [controller]', 'sleep MS', 'quit'\n",
                    argv[0]);
            return 2;
        }
    }
    if (!plugin_path || !configdir) {
        fprintf(stderr, "harness: --plugin and --configdir are required (see --help)\n");
        return 2;
    }

    core = dlopen(core_path, RTLD_NOW | RTLD_GLOBAL);
    if (!core) {
        fprintf(stderr, "harness: cannot load core %s: %s\n", core_path, dlerror());
        return 3;
    }
    core_startup = (ptr_CoreStartup)need_sym(core, "CoreStartup");
    core_shutdown = (ptr_CoreShutdown)need_sym(core, "CoreShutdown");
    if (core_startup(0x020001, configdir, NULL, "core", debug_cb, NULL, NULL) != M64ERR_SUCCESS) {
        fprintf(stderr, "harness: CoreStartup failed\n");
        return 3;
    }

    plugin = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!plugin) {
        fprintf(stderr, "harness: cannot load plugin %s: %s\n", plugin_path, dlerror());
        return 3;
    }
    get_version = (ptr_PluginGetVersion)need_sym(plugin, "PluginGetVersion");
    plugin_startup = (ptr_PluginStartup)need_sym(plugin, "PluginStartup");
    plugin_shutdown = (ptr_PluginShutdown)need_sym(plugin, "PluginShutdown");
    initiate = (ptr_InitiateControllers)need_sym(plugin, "InitiateControllers");
    rom_open = (ptr_RomOpen)need_sym(plugin, "RomOpen");
    rom_closed = (ptr_RomClosed)need_sym(plugin, "RomClosed");
    get_keys = (ptr_GetKeys)need_sym(plugin, "GetKeys");
    need_sym(plugin, "ControllerCommand");
    need_sym(plugin, "ReadController");
    need_sym(plugin, "SDL_KeyDown");
    need_sym(plugin, "SDL_KeyUp");

    get_version(&ptype, &pversion, &api, &pname, NULL);
    /* the same acceptance rule as the 2.5.9 core */
    if (ptype != M64PLUGIN_INPUT || (api & 0xffff0000) != 0x020000 || api < 0x020100) {
        fprintf(stderr, "harness: incompatible Input plugin (type %d api 0x%06x)\n", (int)ptype, api);
        return 4;
    }
    printf("{\"event\": \"version\", \"name\": \"%s\", \"api\": %d, \"version\": %d}\n", pname, api, pversion);

    if (plugin_startup(core, "plugin", debug_cb) != M64ERR_SUCCESS) {
        fprintf(stderr, "harness: PluginStartup failed\n");
        return 4;
    }
    for (i = 0; i < nsets; i++)
        if (apply_set(core, sets[i]) != 0) {
            fprintf(stderr, "harness: --set %s failed\n", sets[i]);
            return 5;
        }

    memset(controls, 0, sizeof controls);
    info.Controls = controls;
    initiate(info);
    printf("{\"event\": \"controllers\", \"present\": [%d, %d, %d, %d]}\n", controls[0].Present,
           controls[1].Present, controls[2].Present, controls[3].Present);
    if (!rom_open()) {
        fprintf(stderr, "harness: RomOpen failed\n");
        return 4;
    }
    fflush(stdout);

    while (fgets(line, sizeof line, stdin)) {
        int n = 0, ctl = 0, ms = 0, k;
        if (sscanf(line, "poll %d %d", &n, &ctl) >= 1) {
            for (k = 0; k < n; k++) {
                BUTTONS keys;
                double t0, dt;
                keys.Value = 0xdeadbeef; /* the plugin must always overwrite it */
                t0 = now_ms();
                get_keys(ctl, &keys);
                dt = now_ms() - t0;
                printf("{\"event\": \"poll\", \"controller\": %d, \"ms\": %.3f, \"value\": %u, \"A_BUTTON\": %u, "
                       "\"B_BUTTON\": %u, \"R_TRIG\": %u, \"Z_TRIG\": %u, \"START_BUTTON\": %u, \"U_CBUTTON\": %u, "
                       "\"X_AXIS\": %d, \"Y_AXIS\": %d}\n",
                       ctl, dt, keys.Value, keys.A_BUTTON, keys.B_BUTTON, keys.R_TRIG, keys.Z_TRIG,
                       keys.START_BUTTON, keys.U_CBUTTON, keys.X_AXIS, keys.Y_AXIS);
            }
        } else if (sscanf(line, "sleep %d", &ms) == 1) {
            struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
            nanosleep(&ts, NULL);
            printf("{\"event\": \"slept\", \"ms\": %d}\n", ms);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            printf("{\"event\": \"error\", \"message\": \"unknown command\"}\n");
        }
        fflush(stdout);
    }

    rom_closed();
    plugin_shutdown();
    core_shutdown();
    printf("{\"event\": \"done\"}\n");
    fflush(stdout);
    return 0;
}
