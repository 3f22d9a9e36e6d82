/* Consistent Overhead Byte Stuffing: frames never contain 0x00, so 0x00 delimits them and a
 * receiver resynchronises at the next delimiter after any garbage. */
#ifndef EDGELOOP_COBS_H
#define EDGELOOP_COBS_H
#include <stddef.h>
#include <stdint.h>

/* Worst-case encoded size of n bytes (without the trailing 0x00 delimiter). */
#define COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* Encode; returns the encoded length (no delimiter written), or 0 if out is too small. */
size_t cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
/* Decode one frame (without its delimiter); returns the decoded length, or -1 when the
 * input is not valid COBS (a zero byte, or a code that runs past the end). */
long cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);

#endif
