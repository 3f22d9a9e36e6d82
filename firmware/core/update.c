/* Model update over the serial line.
 *
 * `UPDATE <size> <crc32hex>` switches the receive direction to COBS frames delimited by
 * 0x00; the device keeps streaming reading lines, and answers every frame with a text line:
 *   @ACK <next_offset>            chunk stored (or already had it)
 *   @NAK <next_offset> <reason>   cobs|short|long|crc|type|offset|size|overflow|incomplete|
 *                                 imagecrc|badimage-<why>|testvector|toolarge|toosmall|timeout
 * Each NAK carries the offset to resume from, so the sender never has to guess. */
#include <string.h>

#include "cobs.h"
#include "crc32.h"
#include "device.h"
#include "text.h"

static void nak(device_t *d, const char *reason) {
    char buf[64];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@NAK ");
    text_u32(buf, sizeof buf, &n, d->upd.received);
    text_str(buf, sizeof buf, &n, " ");
    text_str(buf, sizeof buf, &n, reason);
    device_reply(d, buf);
}

static void ack(device_t *d) {
    char buf[32];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@ACK ");
    text_u32(buf, sizeof buf, &n, d->upd.received);
    device_reply(d, buf);
}

static void leave(device_t *d) {
    d->upd.active = false;
    d->upd.enc_len = 0;
    d->upd.overflow = false;
}

static void discard_session(device_t *d) {
    slot_meta_t m = {0};
    slots_write_meta(&d->port.flash, d->upd.slot, &m);
    d->upd.received = 0;
}

void update_begin(device_t *d, uint32_t size, uint32_t crc) {
    update_rx_t *u = &d->upd;
    u->received = 0;
    if (size > SLOT_SIZE) return nak(d, "toolarge");
    if (size < MODEL_HEADER_SIZE) return nak(d, "toosmall");
    u->slot = d->active_slot == 0 ? 1u : 0u;
    slot_meta_t m;
    slots_read_meta(&d->port.flash, u->slot, &m);
    if (!(m.state == SLOT_RECEIVING && m.size == size && m.crc == crc && m.received <= size)) {
        /* A different image (or none in progress): start over in the inactive slot. */
        memset(&m, 0, sizeof m);
        m.state = SLOT_RECEIVING;
        m.size = size;
        m.crc = crc;
        slots_write_meta(&d->port.flash, u->slot, &m);
    }
    u->size = size;
    u->crc = crc;
    u->received = m.received;
    u->active = true;
    u->enc_len = 0;
    u->overflow = false;
    u->last_frame_ms = d->port.millis(d->port.ctx);
    char buf[80];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@OK UPDATE slot=");
    text_str(buf, sizeof buf, &n, u->slot ? "b" : "a");
    text_str(buf, sizeof buf, &n, " offset=");
    text_u32(buf, sizeof buf, &n, u->received);
    text_str(buf, sizeof buf, &n, " chunk=");
    text_u32(buf, sizeof buf, &n, UPDATE_CHUNK_MAX);
    device_reply(d, buf);
}

static void commit(device_t *d) {
    update_rx_t *u = &d->upd;
    if (u->received != u->size) return nak(d, "incomplete");
    const uint8_t *image = slots_data(&d->port.flash, u->slot);
    if (crc32(image, u->size) != u->crc) {
        discard_session(d);
        leave(d);
        return nak(d, "imagecrc");
    }
    model_t candidate;
    model_status_t st = model_parse(image, u->size, &candidate);
    if (st == MODEL_OK) st = model_self_test(&candidate);
    if (st != MODEL_OK) {
        /* The old model keeps running; the rejected image is forgotten. */
        discard_session(d);
        leave(d);
        char reason[32];
        size_t n = 0;
        if (st != MODEL_ERR_VECTOR) text_str(reason, sizeof reason, &n, "badimage-");
        text_str(reason, sizeof reason, &n, model_status_name(st));
        return nak(d, reason);
    }
    slot_meta_t m = {0};
    m.state = SLOT_VALID;
    m.generation = d->generation + 1u;
    m.size = u->size;
    m.crc = u->crc;
    slots_write_meta(&d->port.flash, u->slot, &m);
    leave(d);
    device_load_active(d);
    char buf[64];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@OK COMMIT slot=");
    text_str(buf, sizeof buf, &n, d->active_slot == 1 ? "b" : "a");
    text_str(buf, sizeof buf, &n, " hash=");
    text_hex8(buf, sizeof buf, &n, d->model.crc);
    device_reply(d, buf);
}

static void data_frame(device_t *d, const uint8_t *f, uint32_t len) {
    update_rx_t *u = &d->upd;
    const uint32_t offset = load_le_u32(f + 1);
    const uint32_t n = load_le_u16(f + 5);
    if (7u + n + 4u > len) return nak(d, "short");
    if (7u + n + 4u < len) return nak(d, "long");
    if (n == 0 || n > UPDATE_CHUNK_MAX || n > u->size || offset > u->size - n)
        return nak(d, "size"); /* written so that a huge offset cannot wrap around */
    if (offset + n <= u->received) return ack(d); /* a resend of a chunk we have */
    if (offset != u->received) return nak(d, "offset");
    slots_write_data(&d->port.flash, u->slot, offset, f + 7, n);
    u->received += n;
    slot_meta_t m;
    slots_read_meta(&d->port.flash, u->slot, &m);
    m.received = u->received;
    /* Persisting the acknowledged offset is what lets a transfer resume after a reset. */
    slots_write_meta(&d->port.flash, u->slot, &m);
    ack(d);
}

static void frame(device_t *d) {
    update_rx_t *u = &d->upd;
    uint8_t f[UPDATE_FRAME_MAX];
    const long len = cobs_decode(u->enc, u->enc_len, f, sizeof f);
    if (len < 0) return nak(d, "cobs");
    if (len < 5) return nak(d, "short");
    if (f[0] == FRAME_DATA && len < 11) return nak(d, "short");
    if (f[0] == FRAME_DATA && 7u + load_le_u16(f + 5) + 4u > (uint32_t)len)
        return nak(d, "short");
    if (crc32(f, (size_t)len - 4u) != load_le_u32(f + len - 4)) return nak(d, "crc");
    switch (f[0]) {
    case FRAME_DATA: return data_frame(d, f, (uint32_t)len);
    case FRAME_COMMIT: return commit(d);
    case FRAME_ABORT:
        leave(d);
        device_reply(d, "@OK ABORT");
        return;
    default: return nak(d, "type");
    }
}

void update_rx_byte(device_t *d, uint8_t byte) {
    update_rx_t *u = &d->upd;
    u->last_frame_ms = d->port.millis(d->port.ctx);
    if (byte != 0) {
        if (u->enc_len < sizeof u->enc) u->enc[u->enc_len++] = byte;
        else u->overflow = true;
        return;
    }
    if (u->overflow) nak(d, "overflow");
    else if (u->enc_len > 0) frame(d);
    u->enc_len = 0;
    u->overflow = false;
}

void update_poll(device_t *d, uint32_t now_ms) {
    if ((int32_t)(now_ms - d->upd.last_frame_ms) > (int32_t)UPDATE_IDLE_TIMEOUT_MS) {
        /* The sender went away: back to line mode; the slot keeps its acked offset. */
        nak(d, "timeout");
        leave(d);
    }
}
