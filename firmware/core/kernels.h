/* Int8 kernels with TensorFlow Lite's integer requantization arithmetic, so the device's
 * outputs are bit-exact with the TFLite / TFLite Micro reference kernels. */
#ifndef EDGELOOP_KERNELS_H
#define EDGELOOP_KERNELS_H
#include <stdint.h>

int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t rounding_divide_by_pot(int32_t x, int exponent);
/* gemmlowp-style double rounding, the TFLite reference default (TFLITE_SINGLE_ROUNDING off). */
int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift);

typedef struct {
    uint16_t in, out;
    int32_t input_offset;  /* -input zero point */
    int32_t output_offset; /* +output zero point */
    int8_t act_min, act_max;
    uint8_t n_mult;        /* 1 = per-tensor, out = per-channel */
    const int8_t *weights; /* out x in, row-major (TFLite's FULLY_CONNECTED layout) */
    const uint8_t *bias;   /* int32[out], little-endian, possibly unaligned */
    const uint8_t *mult;   /* int32[n_mult] */
    const uint8_t *shift;  /* int32[n_mult] */
} fc_layer_t;

/* output[o] = clamp(requant(sum_i (input[i] + input_offset) * w[o][i] + bias[o])). */
void fully_connected_int8(const fc_layer_t *layer, const int8_t *input, int8_t *output);

static inline int32_t load_le_i32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24));
}
static inline uint32_t load_le_u32(const uint8_t *p) { return (uint32_t)load_le_i32(p); }
static inline uint16_t load_le_u16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] | (uint16_t)(p[1] << 8));
}

#endif
