/* Telemetry profiles (see kp_profile.h). */
#include "kp_profile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* RDRAM keeps each 32-bit word in host order, so on a little-endian host the
 * N64 (big-endian) byte at address a lives at a ^ 3 and a halfword at a ^ 2. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define KP_S8 0u
#define KP_S16 0u
#else
#define KP_S8 3u
#define KP_S16 2u
#endif

static const struct {
    const char *name;
    kp_type type;
    uint32_t size;
} k_types[] = {
    { "u8", KP_T_U8, 1 },   { "s8", KP_T_S8, 1 },   { "u16", KP_T_U16, 2 }, { "s16", KP_T_S16, 2 },
    { "u32", KP_T_U32, 4 }, { "s32", KP_T_S32, 4 }, { "f32", KP_T_F32, 4 },
};

static int parse_entry(char *entry, kp_profile *p, char *err, size_t errlen)
{
    char *tok[3];
    int n = 0;
    char *s = entry, *endp;
    unsigned long addr;
    uint32_t seg;
    size_t i, len;
    kp_field *f;

    /* split on ':' / whitespace / ',' */
    while (*s && n < 4) {
        while (*s == ':' || *s == ',' || isspace((unsigned char)*s))
            s++;
        if (!*s)
            break;
        if (n == 3) {
            snprintf(err, errlen, "profile entry '%s': expected name:address:type", entry);
            return -1;
        }
        tok[n++] = s;
        while (*s && *s != ':' && *s != ',' && !isspace((unsigned char)*s))
            s++;
        if (*s)
            *s++ = '\0';
    }
    if (n == 0)
        return 0; /* blank */
    if (n != 3) {
        snprintf(err, errlen, "profile entry starting '%s': expected name:address:type", tok[0]);
        return -1;
    }
    len = strlen(tok[0]);
    if (len == 0 || len >= KP_PROFILE_NAME) {
        snprintf(err, errlen, "profile name '%s': 1..%d characters", tok[0], KP_PROFILE_NAME - 1);
        return -1;
    }
    for (i = 0; i < len; i++) {
        char c = tok[0][i];
        if (!isalnum((unsigned char)c) && c != '_' && c != '-' && c != '.') {
            snprintf(err, errlen, "profile name '%s': only letters, digits, _ - .", tok[0]);
            return -1;
        }
    }
    errno = 0;
    addr = strtoul(tok[1], &endp, 0);
    if (errno || *endp || endp == tok[1] || addr > 0xFFFFFFFFul) {
        snprintf(err, errlen, "profile entry '%s': bad address '%s'", tok[0], tok[1]);
        return -1;
    }
    if (p->count >= KP_PROFILE_MAX) {
        snprintf(err, errlen, "profile: more than %d entries", KP_PROFILE_MAX);
        return -1;
    }
    f = &p->fields[p->count];
    for (i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (strcmp(tok[2], k_types[i].name) == 0)
            break;
    if (i == sizeof k_types / sizeof k_types[0]) {
        snprintf(err, errlen, "profile entry '%s': unknown type '%s' (u8 s8 u16 s16 u32 s32 f32)", tok[0],
                 tok[2]);
        return -1;
    }
    f->type = k_types[i].type;
    /* Physical, KSEG0 (0x80..) or KSEG1 (0xA0..) only: masking any other
     * segment down to 29 bits would alias it onto RDRAM (0x20000000 -> 0). */
    seg = (uint32_t)addr & 0xE0000000u;
    f->phys = (uint32_t)addr & 0x1FFFFFFFu;
    if ((seg != 0 && seg != 0x80000000u && seg != 0xA0000000u) || f->phys + k_types[i].size > KP_RDRAM_SIZE) {
        snprintf(err, errlen,
                 "profile entry '%s': address 0x%08lx is outside RDRAM (0x00000000-0x007FFFFF, or the same "
                 "at 0x80000000 / 0xA0000000)", tok[0], addr);
        return -1;
    }
    if (f->phys % k_types[i].size != 0) {
        snprintf(err, errlen, "profile entry '%s': address 0x%08lx is not aligned for %s", tok[0], addr, tok[2]);
        return -1;
    }
    memcpy(f->name, tok[0], len + 1);
    p->count++;
    return 0;
}

int kp_profile_parse(const char *text, kp_profile *p, char *err, size_t errlen)
{
    char *copy, *line, *save = NULL;
    int rc = 0;

    p->count = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!text)
        return 0;
    copy = strdup(text);
    if (!copy) {
        snprintf(err, errlen, "profile: out of memory");
        return -1;
    }
    for (line = strtok_r(copy, ";\n", &save); line; line = strtok_r(NULL, ";\n", &save)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        if (parse_entry(line, p, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    free(copy);
    if (rc)
        p->count = 0;
    return rc;
}

int kp_profile_load_file(const char *path, kp_profile *p, char *err, size_t errlen)
{
    struct stat st;
    char *text;
    size_t n = 0;
    int fd, rc;

    p->count = 0;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "profile file '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "profile file '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "profile file '%s': %s", path,
                 S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        close(fd);
        return -1;
    }
    text = malloc(KP_PROFILE_FILE_MAX + 2);
    if (!text) {
        close(fd);
        snprintf(err, errlen, "profile file '%s': out of memory", path);
        return -1;
    }
    /* read one byte past the limit to tell "exactly 64 KiB" from "more" */
    while (n < KP_PROFILE_FILE_MAX + 1) {
        ssize_t got = read(fd, text + n, KP_PROFILE_FILE_MAX + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "profile file '%s': %s", path, strerror(errno));
            close(fd);
            free(text);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (n > KP_PROFILE_FILE_MAX) {
        snprintf(err, errlen, "profile file '%s': larger than 64 KiB", path);
        free(text);
        return -1;
    }
    if (memchr(text, '\0', n)) {
        snprintf(err, errlen, "profile file '%s': contains a NUL byte (not a text file)", path);
        free(text);
        return -1;
    }
    text[n] = '\0';
    rc = kp_profile_parse(text, p, err, errlen);
    if (rc != 0) {
        /* prefix the file name so the user knows where to look */
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
    free(text);
    return rc;
}

size_t kp_profile_format(const kp_profile *p, const uint8_t *rdram, char *out, size_t outlen)
{
    size_t used = 0;
    int i;

    if (outlen)
        out[0] = '\0';
    if (!rdram || p->count == 0 || outlen == 0)
        return 0;
    for (i = 0; i < p->count; i++) {
        const kp_field *f = &p->fields[i];
        char val[48];
        uint32_t w;
        uint16_t h;
        int n;
        switch (f->type) {
        case KP_T_U8: snprintf(val, sizeof val, "%u", (unsigned)rdram[f->phys ^ KP_S8]); break;
        case KP_T_S8: snprintf(val, sizeof val, "%d", (int)(int8_t)rdram[f->phys ^ KP_S8]); break;
        case KP_T_U16:
        case KP_T_S16:
            memcpy(&h, rdram + (f->phys ^ KP_S16), 2);
            if (f->type == KP_T_U16)
                snprintf(val, sizeof val, "%u", (unsigned)h);
            else
                snprintf(val, sizeof val, "%d", (int)(int16_t)h);
            break;
        default:
            memcpy(&w, rdram + f->phys, 4);
            if (f->type == KP_T_U32)
                snprintf(val, sizeof val, "%lu", (unsigned long)w);
            else if (f->type == KP_T_S32)
                snprintf(val, sizeof val, "%ld", (long)(int32_t)w);
            else {
                float fl;
                memcpy(&fl, &w, 4);
                snprintf(val, sizeof val, "%.9g", (double)fl);
            }
            break;
        }
        n = snprintf(out + used, outlen - used, "%s%s=%s", i ? ";" : "", f->name, val);
        if (n < 0 || (size_t)n >= outlen - used) {
            out[used] = '\0';
            break;
        }
        used += (size_t)n;
    }
    return used;
}
