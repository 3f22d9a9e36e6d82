#include "kernels.h"

int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    /* C division truncates toward zero, exactly as gemmlowp relies on. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* >> on a negative int32 is arithmetic with GCC and Clang, as TFLite assumes. */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    /* TFLite multiplies in int32 and relies on two's-complement wrap; do it unsigned. */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier),
                                  right);
}

void fully_connected_int8(const fc_layer_t *layer, const int8_t *input, int8_t *output) {
    for (uint16_t o = 0; o < layer->out; o++) {
        const int8_t *w = layer->weights + (uint32_t)o * layer->in;
        int32_t acc = 0;
        for (uint16_t i = 0; i < layer->in; i++) {
            acc += ((int32_t)input[i] + layer->input_offset) * (int32_t)w[i];
        }
        acc += load_le_i32(layer->bias + 4u * o);
        const uint32_t m = layer->n_mult == 1 ? 0u : o;
        acc = multiply_by_quantized_multiplier(acc, load_le_i32(layer->mult + 4u * m),
                                               (int)load_le_i32(layer->shift + 4u * m));
        acc += layer->output_offset;
        if (acc < layer->act_min) acc = layer->act_min;
        if (acc > layer->act_max) acc = layer->act_max;
        output[o] = (int8_t)acc;
    }
}
