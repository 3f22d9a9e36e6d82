/* Deterministic simulated climate sensors (seeded) with injectable faults. */
#ifndef EDGELOOP_SENSORS_SIM_H
#define EDGELOOP_SENSORS_SIM_H
#include <stdint.h>

#include "reading.h"

typedef enum { FAULT_NONE = 0, FAULT_FIRE, FAULT_STUCK } fault_kind_t;

typedef struct {
    uint32_t rng;
    uint32_t n;
    fault_kind_t fault;
    uint32_t fault_n;
    float fire_step; /* degC added per sample per sample since the fire started */
    reading_t stuck;
    reading_t last;
} sensors_sim_t;

void sensors_sim_init(sensors_sim_t *s, uint32_t seed);
void sensors_sim_sample(sensors_sim_t *s, reading_t *out);
void sensors_sim_fault(sensors_sim_t *s, fault_kind_t kind, float fire_step);

#endif
