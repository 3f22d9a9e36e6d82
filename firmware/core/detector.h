/* The edge decision: compare each reading with the model's forecast of it. */
#ifndef EDGELOOP_DETECTOR_H
#define EDGELOOP_DETECTOR_H
#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "reading.h"

#define DETECTOR_MAX_WINDOW MODEL_MAX_WINDOW
/* Identical consecutive readings (every field) before a sensor counts as stuck: real
 * readings at these resolutions always move in the last digit within a few samples. */
#define DETECTOR_STUCK_RUN 8u
/* After this many anomalies in a row the window accepts the new level (a real shift). */
#define DETECTOR_REARM 120u

typedef enum { ANOMALY_NONE = 0, ANOMALY_RESIDUAL = 1, ANOMALY_STUCK = 2 } anomaly_t;

typedef struct {
    reading_t hist[DETECTOR_MAX_WINDOW];
    uint32_t count; /* readings pushed so far (saturates) */
    uint32_t head;
    reading_t prev;
    uint32_t same_run, anomaly_run;
    float last_prediction, last_residual;
    bool have_prediction;
} detector_t;

void detector_reset(detector_t *d);
/* Decide on `r`, then (unless it is anomalous) add it to the window. */
anomaly_t detector_step(detector_t *d, const model_t *m, const reading_t *r);
/* The model input for the current window (time-major); false until the window is full. */
bool detector_window(const detector_t *d, const model_t *m, float *out);

#endif
