#include "kp_frame.h"

#include <string.h>

void kp_frame_convert(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh)
{
    int ox, oy;
    size_t srow = (size_t)sw * 3;

    if (dw == sw && dh == sh) {
        for (oy = 0; oy < dh; oy++)
            memcpy(dst + (size_t)oy * srow, src + (size_t)(sh - 1 - oy) * srow, srow);
        return;
    }
    for (oy = 0; oy < dh; oy++) {
        /* source rows [y0, y1) counted from the top of the picture */
        int y0 = (int)((long long)oy * sh / dh);
        int y1 = (int)((long long)(oy + 1) * sh / dh);
        if (y1 <= y0)
            y1 = y0 + 1;
        for (ox = 0; ox < dw; ox++) {
            int x0 = (int)((long long)ox * sw / dw);
            int x1 = (int)((long long)(ox + 1) * sw / dw);
            unsigned sum[3] = { 0, 0, 0 };
            unsigned count = 0;
            int x, y;
            uint8_t *d = dst + ((size_t)oy * (size_t)dw + (size_t)ox) * 3;
            if (x1 <= x0)
                x1 = x0 + 1;
            for (y = y0; y < y1; y++) {
                const uint8_t *row = src + (size_t)(sh - 1 - y) * srow;
                for (x = x0; x < x1; x++) {
                    sum[0] += row[x * 3];
                    sum[1] += row[x * 3 + 1];
                    sum[2] += row[x * 3 + 2];
                }
                count += (unsigned)(x1 - x0);
            }
            d[0] = (uint8_t)((sum[0] + count / 2) / count);
            d[1] = (uint8_t)((sum[1] + count / 2) / count);
            d[2] = (uint8_t)((sum[2] + count / 2) / count);
        }
    }
}
