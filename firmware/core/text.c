#include "text.h"

#include <math.h>

void text_str(char *buf, size_t cap, size_t *len, const char *s) {
    while (*s && *len + 1 < cap) buf[(*len)++] = *s++;
    buf[*len] = '\0';
}

void text_u32(char *buf, size_t cap, size_t *len, uint32_t v) {
    char tmp[11];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n && *len + 1 < cap) buf[(*len)++] = tmp[--n];
    buf[*len] = '\0';
}

void text_i32(char *buf, size_t cap, size_t *len, int32_t v) {
    if (v < 0) {
        text_str(buf, cap, len, "-");
        text_u32(buf, cap, len, (uint32_t)0 - (uint32_t)v);
    } else {
        text_u32(buf, cap, len, (uint32_t)v);
    }
}

void text_hex8(char *buf, size_t cap, size_t *len, uint32_t v) {
    static const char k_hex[] = "0123456789abcdef";
    for (int shift = 28; shift >= 0 && *len + 1 < cap; shift -= 4)
        buf[(*len)++] = k_hex[(v >> shift) & 0xFu];
    buf[*len] = '\0';
}

void text_fixed(char *buf, size_t cap, size_t *len, float v, unsigned decimals) {
    if (isnan(v)) {
        text_str(buf, cap, len, "nan");
        return;
    }
    uint32_t scale = 1;
    for (unsigned i = 0; i < decimals && i < 6u; i++) scale *= 10u;
    double x = (double)v;
    const bool neg = x < 0.0;
    if (neg) x = -x;
    if (x > 2.0e9) x = 2.0e9;
    uint64_t scaled = (uint64_t)(x * (double)scale + 0.5);
    if (neg && scaled) text_str(buf, cap, len, "-");
    text_u32(buf, cap, len, (uint32_t)(scaled / scale));
    if (decimals == 0) return;
    text_str(buf, cap, len, ".");
    uint32_t frac = (uint32_t)(scaled % scale);
    for (uint32_t div = scale / 10u; div; div /= 10u) {
        char d[2] = {(char)('0' + (frac / div) % 10u), '\0'};
        text_str(buf, cap, len, d);
    }
}

bool text_parse_u32(const char *s, uint32_t *out) {
    uint64_t v = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        v = v * 10u + (uint64_t)(*s - '0');
        if (v > 0xFFFFFFFFu) return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool text_parse_i32(const char *s, int32_t *out) {
    const bool neg = *s == '-';
    uint32_t v;
    if (!text_parse_u32(neg ? s + 1 : s, &v) || v > (neg ? 2147483648u : 2147483647u))
        return false;
    *out = neg ? (int32_t)(0u - v) : (int32_t)v;
    return true;
}

bool text_parse_hex32(const char *s, uint32_t *out) {
    uint32_t v = 0;
    int n = 0;
    for (; *s; s++, n++) {
        char c = *s;
        uint32_t d;
        if (c >= '0' && c <= '9') d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (uint32_t)(c - 'A' + 10);
        else return false;
        if (n >= 8) return false;
        v = (v << 4) | d;
    }
    if (n == 0) return false;
    *out = v;
    return true;
}

bool text_parse_float(const char *s, float *out) {
    const bool neg = *s == '-';
    if (neg || *s == '+') s++;
    double v = 0.0, scale = 1.0;
    bool digits = false, dot = false;
    for (; *s; s++) {
        if (*s == '.' && !dot) {
            dot = true;
        } else if (*s >= '0' && *s <= '9') {
            digits = true;
            if (dot) {
                scale /= 10.0;
                v += (double)(*s - '0') * scale;
            } else {
                v = v * 10.0 + (double)(*s - '0');
            }
            if (v > 1.0e9) return false;
        } else {
            return false;
        }
    }
    if (!digits) return false;
    *out = (float)(neg ? -v : v);
    return true;
}
