/* Two model slots (A/B) in a flash region, with a small metadata record per slot.
 *
 * Layout: meta A at 0, meta B at 64, slot data A at 256, slot data B at 256 + SLOT_SIZE.
 * The active slot is the VALID one with the highest generation whose data still matches
 * its CRC. A new image is written to the other slot, whose meta says RECEIVING (with the
 * acknowledged offset, so a transfer resumes after a reset) until the image is verified;
 * a reset at any point before that leaves the old slot active. */
#ifndef EDGELOOP_SLOTS_H
#define EDGELOOP_SLOTS_H
#include <stdbool.h>
#include <stdint.h>

#define SLOT_COUNT 2u
#define SLOT_SIZE 16384u
#define SLOT_DATA_OFFSET 256u
#define FLASH_REGION_SIZE (SLOT_DATA_OFFSET + SLOT_COUNT * SLOT_SIZE)
#define SLOT_META_MAGIC 0x544F4C53u /* "SLOT" */

typedef enum {
    SLOT_EMPTY = 0,
    SLOT_RECEIVING = 1,
    SLOT_VALID = 2,
} slot_state_t;

typedef struct {
    uint32_t magic;
    uint32_t state;
    uint32_t generation;
    uint32_t size;
    uint32_t crc;      /* whole-image CRC-32 */
    uint32_t received; /* RECEIVING: bytes acknowledged so far */
    uint32_t meta_crc; /* CRC-32 of the fields above */
} slot_meta_t;

/* Writes go through the HAL (a file on the host, flash-like RAM on QEMU). */
typedef void (*flash_write_fn)(void *ctx, uint32_t offset, const void *data, uint32_t len);

typedef struct {
    uint8_t *base; /* FLASH_REGION_SIZE bytes, readable in place */
    flash_write_fn write;
    void *ctx;
} flash_t;

void slots_read_meta(const flash_t *f, unsigned slot, slot_meta_t *out);
void slots_write_meta(const flash_t *f, unsigned slot, slot_meta_t *meta);
const uint8_t *slots_data(const flash_t *f, unsigned slot);
void slots_write_data(const flash_t *f, unsigned slot, uint32_t offset, const void *d,
                      uint32_t n);
/* True when the slot is VALID and its data matches its CRC. */
bool slots_is_bootable(const flash_t *f, unsigned slot, slot_meta_t *meta);
/* The bootable slot with the highest generation, or -1. */
int slots_pick_active(const flash_t *f);

#endif
