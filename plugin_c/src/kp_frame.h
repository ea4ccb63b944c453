/* Screen hand-off: the core's READ_SCREEN gives RGB rows bottom-up (OpenGL
 * order); the protocol wants top row first, optionally downscaled. */
#ifndef KP_FRAME_H
#define KP_FRAME_H

#include <stdint.h>

/* src: sw x sh RGB, bottom row first. dst: dw x dh RGB, top row first.
 * Downscaling averages each destination pixel's source box; upscaling
 * repeats pixels. dw == sw && dh == sh is a plain row flip. */
void kp_frame_convert(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

#endif
