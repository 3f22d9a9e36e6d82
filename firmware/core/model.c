#include "model.h"

#include <math.h>
#include <string.h>

#include "crc32.h"

static float load_le_f32(const uint8_t *p) {
    uint32_t u = load_le_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

const char *model_status_name(model_status_t s) {
    switch (s) {
    case MODEL_OK: return "ok";
    case MODEL_ERR_SIZE: return "size";
    case MODEL_ERR_MAGIC: return "magic";
    case MODEL_ERR_FORMAT: return "format";
    case MODEL_ERR_CRC: return "crc";
    case MODEL_ERR_SHAPE: return "shape";
    case MODEL_ERR_LAYER: return "layer";
    case MODEL_ERR_VECTOR: return "testvector";
    }
    return "unknown";
}

static uint32_t pad4(uint32_t n) { return (n + 3u) & ~3u; }

model_status_t model_parse(const uint8_t *p, uint32_t size, model_t *m) {
    memset(m, 0, sizeof *m);
    if (size < MODEL_HEADER_SIZE) return MODEL_ERR_SIZE;
    if (load_le_u32(p) != MODEL_MAGIC) return MODEL_ERR_MAGIC;
    if (load_le_u16(p + 4) != MODEL_FORMAT || load_le_u16(p + 6) != MODEL_HEADER_SIZE)
        return MODEL_ERR_FORMAT;
    if (load_le_u32(p + 8) != size) return MODEL_ERR_SIZE;
    m->crc = crc32(p, size);
    m->image = p;
    m->size = size;
    memcpy(m->name, p + 12, MODEL_NAME_LEN);
    m->name[MODEL_NAME_LEN] = '\0';
    m->version = load_le_u32(p + 28);
    m->window = load_le_u16(p + 32);
    m->n_fields = p[34];
    m->target = p[35];
    m->n_inputs = load_le_u16(p + 36);
    m->n_outputs = load_le_u16(p + 38);
    m->input_scale = load_le_f32(p + 40);
    m->input_zp = load_le_i32(p + 44);
    m->output_scale = load_le_f32(p + 48);
    m->output_zp = load_le_i32(p + 52);
    m->threshold = load_le_f32(p + 56);
    m->n_layers = load_le_u16(p + 60);
    m->n_vectors = load_le_u16(p + 62);
    if (m->n_fields == 0 || m->n_fields > MODEL_MAX_FIELDS || m->target >= m->n_fields ||
        m->window == 0 || m->window > MODEL_MAX_WINDOW ||
        (uint32_t)m->window * m->n_fields != m->n_inputs ||
        m->n_inputs > MODEL_MAX_WIDTH || m->n_outputs == 0 || m->n_layers == 0 ||
        m->n_layers > MODEL_MAX_LAYERS || !(m->input_scale > 0.0f) ||
        !(m->output_scale > 0.0f) || m->input_zp < -128 || m->input_zp > 127 ||
        m->output_zp < -128 || m->output_zp > 127)
        return MODEL_ERR_SHAPE;
    const uint32_t end = size;
    uint32_t off = MODEL_HEADER_SIZE;
    const uint32_t norm_bytes = 4u * (2u * m->n_fields + 2u) + MODEL_MAX_FIELDS;
    if (off + norm_bytes > end) return MODEL_ERR_SIZE;
    for (uint8_t f = 0; f < m->n_fields; f++) {
        m->in_mean[f] = load_le_f32(p + off + 4u * f);
        m->in_std[f] = load_le_f32(p + off + 4u * (m->n_fields + f));
        if (!(m->in_std[f] > 0.0f)) return MODEL_ERR_SHAPE;
    }
    m->out_mean = load_le_f32(p + off + 8u * m->n_fields);
    m->out_std = load_le_f32(p + off + 8u * m->n_fields + 4u);
    for (uint8_t f = 0; f < MODEL_MAX_FIELDS; f++) {
        m->field_ids[f] = p[off + 8u * m->n_fields + 8u + f];
        if (f < m->n_fields && m->field_ids[f] > 2u) return MODEL_ERR_SHAPE;
    }
    off += norm_bytes;
    uint16_t width = m->n_inputs;
    for (uint16_t l = 0; l < m->n_layers; l++) {
        fc_layer_t *L = &m->layers[l];
        if (off + 16u > end) return MODEL_ERR_SIZE;
        L->in = load_le_u16(p + off);
        L->out = load_le_u16(p + off + 2);
        L->n_mult = p[off + 5];
        L->act_min = (int8_t)p[off + 6];
        L->act_max = (int8_t)p[off + 7];
        L->input_offset = load_le_i32(p + off + 8);
        L->output_offset = load_le_i32(p + off + 12);
        off += 16u;
        if (L->in != width || L->out == 0 || L->out > MODEL_MAX_WIDTH ||
            (L->n_mult != 1 && L->n_mult != L->out) || L->act_min > L->act_max ||
            L->input_offset < -127 || L->input_offset > 128 || L->output_offset < -128 ||
            L->output_offset > 127)
            return MODEL_ERR_LAYER;
        const uint32_t body = 4u * L->out + 8u * L->n_mult + (uint32_t)L->out * L->in;
        if (off + pad4(body) > end) return MODEL_ERR_SIZE;
        L->bias = p + off;
        L->mult = L->bias + 4u * L->out;
        L->shift = L->mult + 4u * L->n_mult;
        L->weights = (const int8_t *)(L->shift + 4u * L->n_mult);
        for (uint8_t k = 0; k < L->n_mult; k++) {
            int32_t s = load_le_i32(L->shift + 4u * k);
            if (load_le_i32(L->mult + 4u * k) < 0 || s < -31 || s > 30) return MODEL_ERR_LAYER;
        }
        off += pad4(body);
        width = L->out;
    }
    if (width != m->n_outputs) return MODEL_ERR_SHAPE;
    m->vectors = p + off;
    m->vector_stride = pad4((uint32_t)m->n_inputs + m->n_outputs);
    if (off + m->vector_stride * m->n_vectors != end) return MODEL_ERR_SIZE;
    return MODEL_OK;
}

void model_invoke_q(const model_t *m, const int8_t *input, int8_t *output) {
    int8_t a[MODEL_MAX_WIDTH], b[MODEL_MAX_WIDTH];
    const int8_t *in = input;
    for (uint16_t l = 0; l < m->n_layers; l++) {
        int8_t *out = (l + 1u == m->n_layers) ? output : ((l & 1u) ? b : a);
        fully_connected_int8(&m->layers[l], in, out);
        in = out;
    }
}

model_status_t model_self_test(const model_t *m) {
    int8_t out[MODEL_MAX_WIDTH];
    for (uint16_t v = 0; v < m->n_vectors; v++) {
        const uint8_t *vec = m->vectors + (uint32_t)v * m->vector_stride;
        model_invoke_q(m, (const int8_t *)vec, out);
        if (memcmp(out, vec + m->n_inputs, m->n_outputs) != 0) return MODEL_ERR_VECTOR;
    }
    return MODEL_OK;
}

int8_t model_quantize_input(const model_t *m, float normalised) {
    /* TFLite's AffineQuantize: round half away from zero of x / scale, in float. */
    float q = roundf(normalised / m->input_scale) + (float)m->input_zp;
    if (q < -128.0f) q = -128.0f;
    if (q > 127.0f) q = 127.0f;
    return (int8_t)q;
}

float model_predict(const model_t *m, const float *window, int8_t *q_out) {
    int8_t in[MODEL_MAX_WIDTH], out[MODEL_MAX_WIDTH];
    for (uint16_t i = 0; i < m->n_inputs; i++) {
        const uint8_t f = (uint8_t)(i % m->n_fields);
        in[i] = model_quantize_input(m, (window[i] - m->in_mean[f]) / m->in_std[f]);
    }
    model_invoke_q(m, in, out);
    if (q_out) *q_out = out[0];
    const float y = ((float)out[0] - (float)m->output_zp) * m->output_scale;
    return y * m->out_std + m->out_mean;
}
