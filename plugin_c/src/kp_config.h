/* Per-controller settings from the core's config API, sections
 * Input-KartPilot-Control0 .. Control3. */
#ifndef KP_CONFIG_H
#define KP_CONFIG_H

#include "m64p_types.h"
#include "kp_profile.h"

typedef struct {
    int plugged;
    char host[256];
    int port;
    int timeout_ms;
    int frame;          /* 0 = GET (server scrapes), 1 = POST the frame */
    int frame_width;    /* 0 = native */
    int frame_height;
    char savestate[1024]; /* "" = the core's current slot */
    int load_savestate; /* 1 = load savestate at the first poll after the ROM starts */
    int speed_limiter;  /* 0 = turn the core's speed limiter off */
    int reconnect_ms;   /* first reconnect delay, doubles up to reconnect_max_ms */
    int reconnect_max_ms;
    char stats_file[1024]; /* JSON poll statistics written at RomClosed */
    kp_profile profile;
} kp_settings;

/* Resolve the config functions from the core library handle. 0 on success. */
int kp_config_bind(m64p_dynlib_handle core);
/* Register defaults and help texts for all four sections. */
void kp_config_defaults(void);
/* Read controller n's section; profile errors are logged and leave it empty. */
void kp_config_read(int n, kp_settings *s);

#endif
