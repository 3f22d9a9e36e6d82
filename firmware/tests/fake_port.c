#include "fake_port.h"

#include <string.h>

#include "../core/cobs.h"
#include "../core/crc32.h"

fake_t g_fake;

static uint32_t f_millis(void *ctx) {
    (void)ctx;
    return g_fake.now;
}

static void f_write(void *ctx, const char *s, size_t n) {
    (void)ctx;
    if (g_fake.out_len + n >= sizeof g_fake.out) {
        /* Keep the tail: tests look at recent output. */
        const size_t keep = sizeof g_fake.out / 2;
        memmove(g_fake.out, g_fake.out + g_fake.out_len - keep, keep);
        g_fake.out_len = keep;
    }
    memcpy(g_fake.out + g_fake.out_len, s, n);
    g_fake.out_len += n;
    g_fake.out[g_fake.out_len] = '\0';
}

static void f_flash_write(void *ctx, uint32_t off, const void *d, uint32_t n) {
    (void)ctx;
    memcpy(g_fake.flash + off, d, n);
    g_fake.flash_writes++;
}

void fake_reset(int erase_flash) {
    g_fake.now = 0;
    g_fake.out_len = 0;
    g_fake.out[0] = '\0';
    if (erase_flash) memset(g_fake.flash, 0xFF, sizeof g_fake.flash);
}

device_port_t fake_port(void) {
    device_port_t p = {
        .millis = f_millis, .write = f_write, .read_sensors = 0,
        .flash = {.base = g_fake.flash, .write = f_flash_write, .ctx = 0},
        .factory_model = factory_model_blob, .factory_model_size = factory_model_blob_len,
        .simulated = true, .ctx = 0,
    };
    return p;
}

void fake_clear_output(void) {
    g_fake.out_len = 0;
    g_fake.out[0] = '\0';
}

void fake_send(device_t *d, const uint8_t *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) device_rx(d, bytes[i]);
}

const char *fake_cmd(device_t *d, const char *line) {
    fake_clear_output();
    fake_send(d, (const uint8_t *)line, strlen(line));
    device_rx(d, '\n');
    return g_fake.out;
}

void fake_run(device_t *d, uint32_t ms) {
    const uint32_t end = g_fake.now + ms;
    while (g_fake.now < end) {
        g_fake.now += 1;
        device_poll(d);
    }
}

size_t fake_frame(uint8_t type, uint32_t offset, const uint8_t *data, uint16_t n, uint8_t *out,
                  size_t cap) {
    uint8_t raw[UPDATE_FRAME_MAX];
    raw[0] = type;
    raw[1] = (uint8_t)offset;
    raw[2] = (uint8_t)(offset >> 8);
    raw[3] = (uint8_t)(offset >> 16);
    raw[4] = (uint8_t)(offset >> 24);
    size_t len = 5;
    if (type == FRAME_DATA) {
        raw[5] = (uint8_t)n;
        raw[6] = (uint8_t)(n >> 8);
        memcpy(raw + 7, data, n);
        len = 7u + n;
    }
    const uint32_t c = crc32(raw, len);
    for (int k = 0; k < 4; k++) raw[len++] = (uint8_t)(c >> (8 * k));
    size_t e = cobs_encode(raw, len, out, cap - 1);
    out[e] = 0;
    return e + 1;
}

int fake_count(const char *needle) {
    int count = 0;
    for (const char *p = g_fake.out; (p = strstr(p, needle)) != NULL; p += strlen(needle)) count++;
    return count;
}
