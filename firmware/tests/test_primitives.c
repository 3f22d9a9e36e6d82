#include <string.h>

#include "../core/cobs.h"
#include "../core/crc32.h"
#include "../core/kernels.h"
#include "check.h"

static void check_text(void) {
    char buf[32];
    size_t n = 0;
    text_fixed(buf, sizeof buf, &n, 28.6875f, 4);
    CHECK(strcmp(buf, "28.6875") == 0);
    n = 0;
    text_fixed(buf, sizeof buf, &n, -0.00004f, 4);
    CHECK(strcmp(buf, "0.0000") == 0);
    n = 0;
    text_fixed(buf, sizeof buf, &n, -3.25f, 2);
    CHECK(strcmp(buf, "-3.25") == 0);
    n = 0;
    text_fixed(buf, sizeof buf, &n, 993.38525f, 4);
    CHECK(strcmp(buf, "993.3853") == 0);
    n = 0;
    text_hex8(buf, sizeof buf, &n, 0xCBF43926u);
    CHECK(strcmp(buf, "cbf43926") == 0);
    n = 0;
    text_i32(buf, sizeof buf, &n, INT32_MIN);
    CHECK(strcmp(buf, "-2147483648") == 0);
    uint32_t u;
    int32_t i;
    float f;
    CHECK(text_parse_u32("4294967295", &u) && u == 4294967295u);
    CHECK(!text_parse_u32("4294967296", &u));
    CHECK(!text_parse_u32("", &u) && !text_parse_u32("12a", &u));
    CHECK(text_parse_i32("-128", &i) && i == -128);
    CHECK(text_parse_hex32("CBF43926", &u) && u == 0xCBF43926u);
    CHECK(!text_parse_hex32("123456789", &u));
    CHECK(text_parse_float("-26.5", &f) && f == -26.5f);
    CHECK(!text_parse_float("1e5", &f) && !text_parse_float(".", &f));
    /* A small buffer truncates and stays terminated. */
    char tiny[4];
    n = 0;
    text_str(tiny, sizeof tiny, &n, "abcdef");
    CHECK(n == 3 && strcmp(tiny, "abc") == 0);
}

static void check_crc(void) {
    CHECK_EQ(crc32((const uint8_t *)"123456789", 9), 0xCBF43926u);
    CHECK_EQ(crc32((const uint8_t *)"", 0), 0u);
    const uint8_t a[] = "hello ", b[] = "world";
    CHECK_EQ(crc32_update(crc32(a, 6), b, 5), crc32((const uint8_t *)"hello world", 11));
}

static void check_cobs(void) {
    uint8_t in[600], enc[COBS_MAX_ENCODED(600)], dec[600];
    uint32_t x = 12345u;
    for (size_t len = 0; len < 600; len += (len < 260 ? 1 : 37)) {
        for (size_t k = 0; k < len; k++) {
            x = x * 1103515245u + 12345u;
            /* Many zeros and long non-zero runs (the 254-byte code boundary). */
            in[k] = (len % 3 == 0) ? (uint8_t)(k % 255 + 1) : (uint8_t)((x >> 16) % 4 == 0 ? 0 : x >> 24);
        }
        size_t e = cobs_encode(in, len, enc, sizeof enc);
        CHECK(e > 0 && e <= COBS_MAX_ENCODED(len));
        CHECK(memchr(enc, 0, e) == NULL);
        long d = cobs_decode(enc, e, dec, sizeof dec);
        CHECK(d == (long)len && memcmp(in, dec, len) == 0);
    }
    const uint8_t zero_inside[] = {0x03, 0x11, 0x00, 0x22};
    CHECK(cobs_decode(zero_inside, sizeof zero_inside, dec, sizeof dec) < 0);
    const uint8_t runs_past[] = {0x05, 0x11, 0x22};
    CHECK(cobs_decode(runs_past, sizeof runs_past, dec, sizeof dec) < 0);
    CHECK(cobs_encode(in, 10, enc, 5) == 0);
    const uint8_t known_in[] = {0x11, 0x22, 0x00, 0x33};
    const uint8_t known_enc[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    CHECK(cobs_encode(known_in, 4, enc, sizeof enc) == 5 && memcmp(enc, known_enc, 5) == 0);
}

static void check_fixed_point(void) {
    /* Values from gemmlowp's semantics: round half away from zero. */
    CHECK_EQ(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN), INT32_MAX);
    CHECK_EQ(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30), 1 << 29);
    CHECK_EQ(saturating_rounding_doubling_high_mul(-(1 << 30), 1 << 30), -(1 << 29));
    CHECK_EQ(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);   /* 1.5 -> 2 */
    CHECK_EQ(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1); /* nudge toward zero */
    CHECK_EQ(rounding_divide_by_pot(5, 1), 3);
    CHECK_EQ(rounding_divide_by_pot(-5, 1), -3);
    CHECK_EQ(rounding_divide_by_pot(3, 1), 2);
    CHECK_EQ(rounding_divide_by_pot(-3, 1), -2);
    CHECK_EQ(rounding_divide_by_pot(7, 2), 2);
    CHECK_EQ(rounding_divide_by_pot(-7, 0), -7);
    CHECK_EQ(multiply_by_quantized_multiplier(100, 1 << 30, 0), 50);
    CHECK_EQ(multiply_by_quantized_multiplier(100, 1 << 30, -1), 25);
    CHECK_EQ(multiply_by_quantized_multiplier(100, 1 << 30, 2), 200);
    CHECK_EQ(multiply_by_quantized_multiplier(-101, 1 << 30, -1), -25);
}

static void check_fully_connected(void) {
    /* 2 outputs x 3 inputs, per-channel multipliers, ReLU-like clamp on output 1. */
    const int8_t w[6] = {1, 2, 3, -4, 5, -6};
    uint8_t bias[8], mult[8], shift[8];
    const int32_t b[2] = {10, -20}, m[2] = {1 << 30, 1 << 30}, s[2] = {0, -1};
    memcpy(bias, b, 8);
    memcpy(mult, m, 8);
    memcpy(shift, s, 8);
    fc_layer_t L = {.in = 3, .out = 2, .input_offset = 1, .output_offset = -3,
                    .act_min = -10, .act_max = 127, .n_mult = 2, .weights = w,
                    .bias = bias, .mult = mult, .shift = shift};
    const int8_t x[3] = {4, -2, 9};
    int8_t y[2];
    fully_connected_int8(&L, x, y);
    /* o0: (5*1 + -1*2 + 10*3) + 10 = 43 -> *0.5 = 21.5 -> 22, -3 = 19
     * o1: (5*-4 + -1*5 + 10*-6) - 20 = -105 -> *0.25 = -26.25 -> -26, -3 = -29 -> clamp -10 */
    CHECK_EQ(y[0], 19);
    CHECK_EQ(y[1], -10);
}

void test_primitives(void) {
    check_text();
    check_crc();
    check_cobs();
    check_fixed_point();
    check_fully_connected();
}
