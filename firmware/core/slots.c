#include "slots.h"

#include <stddef.h>
#include <string.h>

#include "crc32.h"

static uint32_t meta_crc(const slot_meta_t *m) {
    return crc32((const uint8_t *)m, offsetof(slot_meta_t, meta_crc));
}

void slots_read_meta(const flash_t *f, unsigned slot, slot_meta_t *out) {
    memcpy(out, f->base + 64u * slot, sizeof *out);
    if (out->magic != SLOT_META_MAGIC || out->meta_crc != meta_crc(out) ||
        out->state > SLOT_VALID) {
        /* Erased, torn or never written: treat as empty. */
        memset(out, 0, sizeof *out);
    }
}

void slots_write_meta(const flash_t *f, unsigned slot, slot_meta_t *meta) {
    meta->magic = SLOT_META_MAGIC;
    meta->meta_crc = meta_crc(meta);
    f->write(f->ctx, 64u * slot, meta, (uint32_t)sizeof *meta);
}

const uint8_t *slots_data(const flash_t *f, unsigned slot) {
    return f->base + SLOT_DATA_OFFSET + SLOT_SIZE * slot;
}

void slots_write_data(const flash_t *f, unsigned slot, uint32_t offset, const void *d,
                      uint32_t n) {
    f->write(f->ctx, SLOT_DATA_OFFSET + SLOT_SIZE * slot + offset, d, n);
}

bool slots_is_bootable(const flash_t *f, unsigned slot, slot_meta_t *meta) {
    slots_read_meta(f, slot, meta);
    return meta->state == SLOT_VALID && meta->size > 0 && meta->size <= SLOT_SIZE &&
           crc32(slots_data(f, slot), meta->size) == meta->crc;
}

int slots_pick_active(const flash_t *f) {
    int best = -1;
    uint32_t best_gen = 0;
    for (unsigned s = 0; s < SLOT_COUNT; s++) {
        slot_meta_t m;
        if (slots_is_bootable(f, s, &m) && (best < 0 || m.generation > best_gen)) {
            best = (int)s;
            best_gen = m.generation;
        }
    }
    return best;
}
