#include "sensors_sim.h"

#include <math.h>

static uint32_t xorshift32(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* Uniform in [-1, 1). */
static float noise(uint32_t *state) {
    return (float)(xorshift32(state) >> 8) / 8388608.0f - 1.0f;
}

static float quantize(float v, float step) { return roundf(v / step) * step; }

void sensors_sim_init(sensors_sim_t *s, uint32_t seed) {
    s->rng = seed ? seed : 0x2545F491u;
    s->n = 0;
    s->fault = FAULT_NONE;
    s->fault_n = 0;
    s->fire_step = 0.1f;
}

void sensors_sim_fault(sensors_sim_t *s, fault_kind_t kind, float fire_step) {
    s->fault = kind;
    s->fault_n = 0;
    if (fire_step > 0.0f) s->fire_step = fire_step;
    s->stuck = s->last;
}

void sensors_sim_sample(sensors_sim_t *s, reading_t *out) {
    /* A slow daily-like swing inside the workshop data's ranges (so models trained on it
     * see familiar inputs), with sensor-like noise and the chips' resolutions (1/16 degC
     * as on the workshop board, LPS22HH 1/4096 hPa). */
    const float phase = (float)(s->n % 3600u) * (6.2831853f / 3600.0f);
    out->v[0] = quantize(26.8f + 0.6f * sinf(phase) + 0.04f * noise(&s->rng), 0.0625f);
    out->v[1] = quantize(45.75f - 2.0f * sinf(phase) + 0.1f * noise(&s->rng), 0.1f);
    out->v[2] = quantize(1006.5f + 0.3f * cosf(phase) + 0.02f * noise(&s->rng), 1.0f / 4096.0f);
    s->n++;
    if (s->fault == FAULT_FIRE) {
        /* An accelerating ramp: no forecaster trained on room climate keeps up with it. */
        s->fault_n++;
        const float k = (float)s->fault_n;
        out->v[0] += s->fire_step * k * (k + 1.0f) * 0.5f;
        out->v[1] -= 0.05f * k;
        if (out->v[1] < 5.0f) out->v[1] = 5.0f;
    } else if (s->fault == FAULT_STUCK) {
        *out = s->stuck;
    }
    s->last = *out;
}
