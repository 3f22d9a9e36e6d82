#ifndef EDGELOOP_READING_H
#define EDGELOOP_READING_H

#define READING_FIELDS 3

/* One climate sample in the workshop's units: degC, %RH, hPa. */
typedef struct {
    float v[READING_FIELDS]; /* 0 temp, 1 humidity, 2 pressure */
} reading_t;

#endif
