/* Number <-> text without printf/strtof: newlib's float printf alone costs ~15 KiB of flash. */
#ifndef EDGELOOP_TEXT_H
#define EDGELOOP_TEXT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Append helpers: write at buf[*len], never past cap-1, keep buf NUL-terminated. */
void text_str(char *buf, size_t cap, size_t *len, const char *s);
void text_u32(char *buf, size_t cap, size_t *len, uint32_t v);
void text_i32(char *buf, size_t cap, size_t *len, int32_t v);
void text_hex8(char *buf, size_t cap, size_t *len, uint32_t v);
/* Fixed-point decimal with `decimals` digits (0..6), rounded half away from zero. */
void text_fixed(char *buf, size_t cap, size_t *len, float v, unsigned decimals);

bool text_parse_u32(const char *s, uint32_t *out);
bool text_parse_i32(const char *s, int32_t *out);
bool text_parse_hex32(const char *s, uint32_t *out);
/* [-]digits[.digits]; no exponent. */
bool text_parse_float(const char *s, float *out);

#endif
