/* An in-memory device port for tests: fake clock, captured output, RAM flash. */
#ifndef EDGELOOP_FAKE_PORT_H
#define EDGELOOP_FAKE_PORT_H
#include "../core/device.h"

typedef struct {
    uint32_t now;
    char out[16384];
    size_t out_len;
    uint8_t flash[FLASH_REGION_SIZE];
    uint32_t flash_writes;
} fake_t;

extern fake_t g_fake;
void fake_reset(int erase_flash);
device_port_t fake_port(void);
void fake_clear_output(void);
/* Send a command line and return the output it produced. */
const char *fake_cmd(device_t *d, const char *line);
/* Advance the clock sample by sample, polling the device. */
void fake_run(device_t *d, uint32_t ms);
void fake_send(device_t *d, const uint8_t *bytes, size_t n);
/* Build a COBS-encoded update frame (with the 0x00 delimiter); returns its length. */
size_t fake_frame(uint8_t type, uint32_t offset, const uint8_t *data, uint16_t n, uint8_t *out,
                  size_t cap);
/* Count lines in the output that contain `needle`. */
int fake_count(const char *needle);

extern const unsigned char factory_model_blob[];
extern const unsigned int factory_model_blob_len;

#endif
