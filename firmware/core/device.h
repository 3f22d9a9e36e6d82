/* The sensor node: sampling schedule, line protocol, commands, model slots and updates.
 * Hardware comes in through device_port_t, so the same code runs on the host, under QEMU
 * and on a board, and the unit tests drive it with fakes. */
#ifndef EDGELOOP_DEVICE_H
#define EDGELOOP_DEVICE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "detector.h"
#include "model.h"
#include "reading.h"
#include "sensors_sim.h"
#include "slots.h"

#define FW_VERSION "0.1.0"
/* Longest command line: PREDICT with MODEL_MAX_WIDTH int8 values. */
#define DEVICE_LINE_MAX 768u
#define DEVICE_DEFAULT_RATE_MS 1000u
#define DEVICE_DEFAULT_HEARTBEAT 30u
/* Model update frames: type u8, offset u32, len u16, data[len], crc32 u32. */
#define UPDATE_CHUNK_MAX 256u
#define UPDATE_FRAME_MAX (1u + 4u + 2u + UPDATE_CHUNK_MAX + 4u)
#define UPDATE_ENCODED_MAX (UPDATE_FRAME_MAX + UPDATE_FRAME_MAX / 254u + 2u)
/* Device time without a frame before update mode gives up (the transfer can resume). */
#define UPDATE_IDLE_TIMEOUT_MS 15000u

typedef enum { MODE_ALL = 0, MODE_FILTER = 1 } stream_mode_t;
typedef enum { DEVICE_RUNNING = 0, DEVICE_RESET_REQUESTED = 1 } device_event_t;
typedef enum { FRAME_DATA = 'D', FRAME_COMMIT = 'C', FRAME_ABORT = 'A' } frame_type_t;

typedef struct {
    uint32_t (*millis)(void *ctx);
    void (*write)(void *ctx, const char *s, size_t n);
    /* Real sensors; NULL (or returning false) falls back to the seeded simulator. */
    bool (*read_sensors)(void *ctx, reading_t *out);
    flash_t flash;
    const uint8_t *factory_model;
    uint32_t factory_model_size;
    bool simulated; /* FAULT is accepted only on simulated sensors */
    void *ctx;
} device_port_t;

typedef struct {
    bool active;
    unsigned slot;
    uint32_t size, crc, received;
    uint32_t last_frame_ms;
    uint8_t enc[UPDATE_ENCODED_MAX];
    uint32_t enc_len;
    bool overflow;
} update_rx_t;

typedef struct {
    device_port_t port;
    model_t model;
    bool have_model;
    int active_slot;
    uint32_t generation;
    uint32_t rate_ms, next_sample_ms;
    stream_mode_t mode;
    uint32_t heartbeat_n, since_sent;
    reading_t hb_sum;
    uint32_t suppressed, seq, anomalies;
    sensors_sim_t sim;
    detector_t det;
    char line[DEVICE_LINE_MAX];
    uint32_t line_len;
    uint8_t line_error; /* 0 none, 1 too long, 2 binary garbage */
    update_rx_t upd;
    device_event_t event;
} device_t;

void device_init(device_t *d, const device_port_t *port, uint32_t seed);
/* Feed one received byte (line mode or update frames). */
void device_rx(device_t *d, uint8_t byte);
/* Call often: samples when due. Returns DEVICE_RESET_REQUESTED after a RESET command. */
device_event_t device_poll(device_t *d);
/* Format one reading line (no newline); exposed for tests. */
size_t device_format_reading(const reading_t *r, uint32_t seq, uint32_t ms, bool anomaly,
                             char *buf, size_t cap);

/* Internal, shared with update.c. */
void device_reply(device_t *d, const char *s);
bool device_load_active(device_t *d);
void update_begin(device_t *d, uint32_t size, uint32_t crc);
void update_rx_byte(device_t *d, uint8_t byte);
void update_poll(device_t *d, uint32_t now_ms);

#endif
