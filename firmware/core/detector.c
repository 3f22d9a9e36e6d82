#include "detector.h"

#include <math.h>
#include <string.h>

void detector_reset(detector_t *d) { memset(d, 0, sizeof *d); }

bool detector_window(const detector_t *d, const model_t *m, float *out) {
    const uint32_t w = m->window;
    if (w > DETECTOR_MAX_WINDOW || d->count < w) return false;
    for (uint32_t t = 0; t < w; t++) {
        /* Oldest first: hist[head] is the next slot to write, i.e. just after the newest. */
        const uint32_t idx = (d->head + DETECTOR_MAX_WINDOW - w + t) % DETECTOR_MAX_WINDOW;
        for (uint8_t f = 0; f < m->n_fields; f++)
            out[t * m->n_fields + f] = d->hist[idx].v[m->field_ids[f]];
    }
    return true;
}

static void push(detector_t *d, const reading_t *r) {
    d->hist[d->head] = *r;
    d->head = (d->head + 1u) % DETECTOR_MAX_WINDOW;
    if (d->count < DETECTOR_MAX_WINDOW) d->count++;
}

anomaly_t detector_step(detector_t *d, const model_t *m, const reading_t *r) {
    anomaly_t verdict = ANOMALY_NONE;
    float window[MODEL_MAX_WIDTH];
    d->have_prediction = false;
    if (m && detector_window(d, m, window)) {
        d->last_prediction = model_predict(m, window, NULL);
        d->last_residual = fabsf(r->v[m->field_ids[m->target]] - d->last_prediction);
        d->have_prediction = true;
        if (d->last_residual > m->threshold) verdict = ANOMALY_RESIDUAL;
    }
    const bool same = d->count > 0 && memcmp(&d->prev, r, sizeof *r) == 0;
    d->same_run = same ? d->same_run + 1u : 0u;
    d->prev = *r;
    if (d->same_run + 1u >= DETECTOR_STUCK_RUN) verdict = ANOMALY_STUCK;
    d->anomaly_run = verdict == ANOMALY_NONE ? 0u : d->anomaly_run + 1u;
    /* Anomalous readings stay out of the window, so a ramp cannot drag the forecast along
     * with it; a long run is accepted as a new normal level. */
    if (verdict == ANOMALY_NONE || d->anomaly_run > DETECTOR_REARM) push(d, r);
    if (d->count == 0) push(d, r);
    return verdict;
}
