#include <string.h>

#include "../core/crc32.h"
#include "check.h"
#include "fake_port.h"

static device_t g_dev;
static uint8_t g_new[4096];
static uint8_t g_frame[UPDATE_ENCODED_MAX + 8];

/* A second valid model: the factory image renamed (a new hash, same outputs). */
static uint32_t make_new_model(const char *name) {
    const uint32_t size = factory_model_blob_len;
    memcpy(g_new, factory_model_blob, size);
    memset(g_new + 12, 0, 16);
    memcpy(g_new + 12, name, strlen(name));
    return size;
}

static const char *begin(device_t *d, uint32_t size, uint32_t crc) {
    char cmd[48];
    size_t n = 0;
    text_str(cmd, sizeof cmd, &n, "UPDATE ");
    text_u32(cmd, sizeof cmd, &n, size);
    text_str(cmd, sizeof cmd, &n, " ");
    text_hex8(cmd, sizeof cmd, &n, crc);
    return fake_cmd(d, cmd);
}

static const char *send_frame(device_t *d, uint8_t type, uint32_t off, const uint8_t *data,
                              uint16_t n) {
    fake_clear_output();
    size_t len = fake_frame(type, off, data, n, g_frame, sizeof g_frame);
    fake_send(d, g_frame, len);
    return g_fake.out;
}

static void send_chunks(device_t *d, const uint8_t *img, uint32_t from, uint32_t to) {
    for (uint32_t off = from; off < to; off += 128u) {
        uint16_t n = (uint16_t)((to - off) < 128u ? (to - off) : 128u);
        char want[24];
        size_t k = 0;
        text_str(want, sizeof want, &k, "@ACK ");
        text_u32(want, sizeof want, &k, off + n);
        text_str(want, sizeof want, &k, "\n");
        CHECK(strcmp(send_frame(d, FRAME_DATA, off, img + off, n), want) == 0);
    }
}

static void boot(void) {
    device_port_t p = fake_port();
    device_init(&g_dev, &p, 1);
}

static void good_update_with_errors(void) {
    fake_reset(1);
    boot();
    const uint32_t old_hash = g_dev.model.crc;
    const uint32_t size = make_new_model("renamed-model");
    const uint32_t crc = crc32(g_new, size);
    CHECK(strcmp(begin(&g_dev, size, crc), "@OK UPDATE slot=b offset=0 chunk=256\n") == 0);
    send_chunks(&g_dev, g_new, 0, 256);
    /* A corrupted chunk: NAK crc with the offset to resend from; the resend is ACKed. */
    size_t len = fake_frame(FRAME_DATA, 256, g_new + 256, 128, g_frame, sizeof g_frame);
    g_frame[len / 2] ^= 0x5A;
    if (g_frame[len / 2] == 0) g_frame[len / 2] = 0x01;
    fake_clear_output();
    fake_send(&g_dev, g_frame, len);
    CHECK(strncmp(g_fake.out, "@NAK 256 ", 9) == 0);
    /* Truncated frame: the delimiter arrives early. */
    len = fake_frame(FRAME_DATA, 256, g_new + 256, 128, g_frame, sizeof g_frame);
    fake_clear_output();
    fake_send(&g_dev, g_frame, 40);
    device_rx(&g_dev, 0);
    /* Depending on where the cut falls, COBS or the length field notices. */
    CHECK(strcmp(g_fake.out, "@NAK 256 short\n") == 0 || strcmp(g_fake.out, "@NAK 256 cobs\n") == 0);
    /* Garbage: stray bytes then a delimiter. */
    fake_clear_output();
    const uint8_t junk[] = {'P', 'I', 'N', 'G', '\n', 0x00};
    fake_send(&g_dev, junk, sizeof junk);
    CHECK(strncmp(g_fake.out, "@NAK 256 ", 9) == 0);
    /* Overlong frame without a delimiter. */
    fake_clear_output();
    for (int i = 0; i < 400; i++) device_rx(&g_dev, 0x55);
    device_rx(&g_dev, 0);
    CHECK(strcmp(g_fake.out, "@NAK 256 overflow\n") == 0);
    /* A chunk from the future, and a duplicate of an acked one. */
    CHECK(strcmp(send_frame(&g_dev, FRAME_DATA, 512, g_new + 512, 16), "@NAK 256 offset\n") == 0);
    CHECK(strcmp(send_frame(&g_dev, FRAME_DATA, 128, g_new + 128, 128), "@ACK 256\n") == 0);
    /* An offset that would wrap around 32 bits. */
    CHECK(strcmp(send_frame(&g_dev, FRAME_DATA, 0xFFFFFFF0u, g_new, 32), "@NAK 256 size\n") == 0);
    /* Beyond the announced size. */
    CHECK(strcmp(send_frame(&g_dev, FRAME_DATA, size - 10u, g_new, 100), "@NAK 256 size\n") == 0);
    /* The device kept streaming through all of this. */
    fake_clear_output();
    fake_run(&g_dev, 3000);
    CHECK(fake_count("temp:") >= 3);
    /* Commit before the end is refused. */
    const uint32_t have = g_dev.upd.received;
    CHECK(strncmp(send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0), "@NAK ", 5) == 0);
    send_chunks(&g_dev, g_new, have, size);
    const char *reply = send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0);
    CHECK(strncmp(reply, "@OK COMMIT slot=b hash=", 23) == 0);
    CHECK(g_dev.active_slot == 1 && g_dev.model.crc == crc && g_dev.model.crc != old_hash);
    CHECK(strstr(fake_cmd(&g_dev, "INFO"), "model=renamed-model") != NULL);
    /* It survives a reset, and the next update goes to slot A. */
    fake_reset(0);
    boot();
    CHECK(g_dev.active_slot == 1 && g_dev.model.crc == crc);
    CHECK(strncmp(begin(&g_dev, size, crc), "@OK UPDATE slot=a", 17) == 0);
    CHECK(strcmp(send_frame(&g_dev, FRAME_ABORT, 0, 0, 0), "@OK ABORT\n") == 0);
}

static void reset_midway_and_resume(void) {
    fake_reset(1);
    boot();
    const uint32_t old_hash = g_dev.model.crc;
    const uint32_t size = make_new_model("resumed");
    const uint32_t crc = crc32(g_new, size);
    begin(&g_dev, size, crc);
    send_chunks(&g_dev, g_new, 0, 384);
    /* Power fails: the old model is still the active one after the reset. */
    fake_reset(0);
    boot();
    CHECK(g_dev.active_slot == 0 && g_dev.model.crc == old_hash && g_dev.have_model);
    CHECK(strstr(fake_cmd(&g_dev, "INFO"), "slot=a") != NULL);
    /* The same image resumes at the last acked offset; a different one starts over. */
    CHECK(strcmp(begin(&g_dev, size, crc), "@OK UPDATE slot=b offset=384 chunk=256\n") == 0);
    send_chunks(&g_dev, g_new, 384, size);
    CHECK(strncmp(send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0), "@OK COMMIT slot=b", 17) == 0);
    CHECK(g_dev.model.crc == crc);
    CHECK(strcmp(begin(&g_dev, size, crc ^ 1u), "@OK UPDATE slot=a offset=0 chunk=256\n") == 0);
    send_frame(&g_dev, FRAME_ABORT, 0, 0, 0);
}

static void refused_images(void) {
    fake_reset(1);
    boot();
    const uint32_t old_hash = g_dev.model.crc;
    CHECK(strcmp(begin(&g_dev, SLOT_SIZE + 1u, 0x1234u), "@NAK 0 toolarge\n") == 0);
    CHECK(!g_dev.upd.active);
    CHECK(strcmp(begin(&g_dev, 8, 0x1234u), "@NAK 0 toosmall\n") == 0);
    /* A bad test vector: the image is intact (CRCs match) but the model is wrong. */
    const uint32_t size = make_new_model("badvector");
    model_t m;
    model_parse(g_new, size, &m);
    g_new[(uint32_t)(m.vectors - g_new) + m.n_inputs] ^= 0x01;
    begin(&g_dev, size, crc32(g_new, size));
    send_chunks(&g_dev, g_new, 0, size);
    CHECK(strcmp(send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0), "@NAK 0 testvector\n") == 0);
    CHECK(g_dev.active_slot == 0 && g_dev.model.crc == old_hash && !g_dev.upd.active);
    /* Announced CRC does not match what arrived. */
    make_new_model("wrongcrc");
    begin(&g_dev, size, 0xDEADBEEFu);
    send_chunks(&g_dev, g_new, 0, size);
    CHECK(strcmp(send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0), "@NAK 0 imagecrc\n") == 0);
    /* Not a model at all. */
    memset(g_new, 0x42, size);
    begin(&g_dev, size, crc32(g_new, size));
    send_chunks(&g_dev, g_new, 0, size);
    CHECK(strcmp(send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0), "@NAK 0 badimage-magic\n") == 0);
    CHECK(g_dev.model.crc == old_hash);
    fake_reset(0);
    boot();
    CHECK(g_dev.active_slot == 0 && g_dev.model.crc == old_hash);
    /* Idle in update mode: times out back to line mode. */
    begin(&g_dev, size, 0x1u);
    fake_clear_output();
    fake_run(&g_dev, UPDATE_IDLE_TIMEOUT_MS + 1500u);
    CHECK(strstr(g_fake.out, " timeout\n") != NULL && !g_dev.upd.active);
    CHECK(strcmp(fake_cmd(&g_dev, "PING"), "@PONG\n") == 0);
}

static void damaged_slot_falls_back(void) {
    fake_reset(1);
    boot();
    const uint32_t size = make_new_model("newer");
    const uint32_t crc = crc32(g_new, size);
    begin(&g_dev, size, crc);
    send_chunks(&g_dev, g_new, 0, size);
    send_frame(&g_dev, FRAME_COMMIT, 0, 0, 0);
    CHECK(g_dev.active_slot == 1);
    /* Slot B's data rots: boot falls back to slot A instead of running a broken model. */
    g_fake.flash[SLOT_DATA_OFFSET + SLOT_SIZE + 100] ^= 0xFF;
    fake_reset(0);
    boot();
    CHECK(g_dev.active_slot == 0 && g_dev.have_model);
}

void test_update(void) {
    good_update_with_errors();
    reset_midway_and_resume();
    refused_images();
    damaged_slot_falls_back();
}
