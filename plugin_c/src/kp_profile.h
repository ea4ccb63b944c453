/* Game profiles: named RDRAM values read each poll and sent as X-Telemetry.
 *
 * Format (config string or file): entries separated by ';' or newlines, each
 *     name:address:type        or        name address type
 * address is a KSEG0/KSEG1 or physical N64 address (0x800F1800), type one of
 * u8 s8 u16 s16 u32 s32 f32. '#' starts a comment. */
#ifndef KP_PROFILE_H
#define KP_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#define KP_PROFILE_MAX 64
#define KP_PROFILE_NAME 32
#define KP_RDRAM_SIZE 0x800000u /* the core always allocates 8 MiB */
#define KP_PROFILE_FILE_MAX 65536u /* longest profile file accepted (64 KiB) */

typedef enum { KP_T_U8, KP_T_S8, KP_T_U16, KP_T_S16, KP_T_U32, KP_T_S32, KP_T_F32 } kp_type;

typedef struct {
    char name[KP_PROFILE_NAME];
    uint32_t phys;  /* physical RDRAM offset */
    kp_type type;
} kp_field;

typedef struct {
    kp_field fields[KP_PROFILE_MAX];
    int count;
} kp_profile;

/* Parse text into p. Returns 0, or -1 with a message naming the bad entry. */
int kp_profile_parse(const char *text, kp_profile *p, char *err, size_t errlen);

/* Load a profile file (same format): a regular text file of at most 64 KiB. */
int kp_profile_load_file(const char *path, kp_profile *p, char *err, size_t errlen);

/* Format "name=value;..." reading from rdram (host-endian 32-bit words, as the
 * core stores it). Returns length written (0 when empty or rdram is NULL). */
size_t kp_profile_format(const kp_profile *p, const uint8_t *rdram, char *out, size_t outlen);

#endif
