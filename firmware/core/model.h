/* The firmware's own model image (the "blob" that services/trainer/c_export.py writes and
 * `edgeloop device update-model` streams). Little-endian, read in place from a slot:
 *
 *   header (64 bytes)     magic "ELM1", format, sizes, name, quantization, threshold
 *   normalisation         f32 in_mean[n_fields], in_std[n_fields], out_mean, out_std,
 *                         u8 field_ids[4] (0 temp, 1 humidity, 2 pressure; 0xFF unused)
 *   layers                per layer: u16 in, u16 out, u8 act, u8 n_mult, i8 act_min,
 *                         i8 act_max, i32 input_offset, i32 output_offset,
 *                         i32 bias[out], i32 mult[n_mult], i32 shift[n_mult],
 *                         i8 weights[out*in], zero padding to 4 bytes
 *   test vectors          per vector: i8 input[n_inputs], i8 expected[n_outputs], pad to 4
 *
 * The image's CRC-32 (zlib's) is its identity: INFO's hash, the argument of UPDATE, and
 * what the slot metadata checks at every boot. (No CRC inside the image: a CRC appended
 * to the data it covers makes the CRC of the whole a constant, useless as an identity.)
 */
#ifndef EDGELOOP_MODEL_H
#define EDGELOOP_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define MODEL_MAGIC 0x314D4C45u /* "ELM1" */
#define MODEL_FORMAT 1u
#define MODEL_HEADER_SIZE 64u
#define MODEL_MAX_LAYERS 8u
#define MODEL_MAX_WIDTH 128u
#define MODEL_MAX_FIELDS 4u
/* Samples per input window (the detector keeps this many readings). */
#define MODEL_MAX_WINDOW 64u
#define MODEL_NAME_LEN 16u

typedef enum {
    MODEL_OK = 0,
    MODEL_ERR_SIZE,
    MODEL_ERR_MAGIC,
    MODEL_ERR_FORMAT,
    MODEL_ERR_CRC,
    MODEL_ERR_SHAPE,
    MODEL_ERR_LAYER,
    MODEL_ERR_VECTOR,
} model_status_t;

typedef struct {
    const uint8_t *image;
    uint32_t size;
    uint32_t crc; /* CRC-32 of the whole image: the model's hash on INFO */
    char name[MODEL_NAME_LEN + 1];
    uint32_t version;
    uint16_t window;
    uint8_t n_fields, target;
    uint16_t n_inputs, n_outputs;
    float input_scale, output_scale;
    int32_t input_zp, output_zp;
    float threshold;
    float in_mean[MODEL_MAX_FIELDS], in_std[MODEL_MAX_FIELDS];
    float out_mean, out_std;
    uint8_t field_ids[MODEL_MAX_FIELDS];
    uint16_t n_layers, n_vectors;
    fc_layer_t layers[MODEL_MAX_LAYERS];
    const uint8_t *vectors;
    uint32_t vector_stride;
} model_t;

/* Check the structure of an image and fill *m with pointers into it. */
model_status_t model_parse(const uint8_t *image, uint32_t size, model_t *m);
/* Run the embedded test vectors; MODEL_OK only when every output is bit-exact. */
model_status_t model_self_test(const model_t *m);
/* Int8 in, int8 out (n_inputs -> n_outputs). */
void model_invoke_q(const model_t *m, const int8_t *input, int8_t *output);
/* Raw sensor window (time-major: x[t * n_fields + f]) -> prediction of the target field,
 * in the field's units. Also returns the int8 output when q_out is not NULL. */
float model_predict(const model_t *m, const float *window, int8_t *q_out);
int8_t model_quantize_input(const model_t *m, float normalised);
const char *model_status_name(model_status_t s);

#endif
