/* The STM32F4 flash slot store (hal/stm32f4/flash.c) against a register-level fake of the
 * FLASH peripheral over a NOR array: unlock sequence, sector erase, x8 programming that can
 * only clear bits, and power cuts at any byte. Driven by the real device core: factory
 * install, updates, reboots, a power cut mid-update. */
#include <string.h>

#include "../core/crc32.h"
#include "../hal/stm32f4/flash.h"
#include "check.h"
#include "fake_port.h"

#define SECTOR_SIZE (SLOT_SIZE + 16u * STM32_FLASH_RECORD)
#define SECTOR6 0x08040000u
#define SECTOR7 0x08060000u

typedef struct {
    uint8_t mem[SLOT_COUNT][SECTOR_SIZE];
    uint32_t cr, sr;
    int locked, key_stage;
    int violations;  /* anything a correct driver never does */
    int erases[SLOT_COUNT];
    long power_left; /* operations until the power is cut; < 0 = no cut */
} nor_t;

static nor_t g_nor;

static uint8_t *cell(uint32_t addr) {
    if (addr >= SECTOR6 && addr < SECTOR6 + SECTOR_SIZE) return &g_nor.mem[0][addr - SECTOR6];
    if (addr >= SECTOR7 && addr < SECTOR7 + SECTOR_SIZE) return &g_nor.mem[1][addr - SECTOR7];
    return 0;
}

static int powered(void) {
    if (g_nor.power_left == 0) return 0;
    if (g_nor.power_left > 0) g_nor.power_left--;
    return 1;
}

static uint32_t n_read32(void *ctx, uint32_t addr) {
    (void)ctx;
    if (addr == STM32_FLASH_REGS + 0x0Cu) return g_nor.sr; /* never busy: ops are instant */
    if (addr == STM32_FLASH_REGS + 0x10u) return g_nor.cr | (g_nor.locked ? 1u << 31 : 0u);
    g_nor.violations++;
    return 0;
}

static void n_write32(void *ctx, uint32_t addr, uint32_t v) {
    (void)ctx;
    if (addr == STM32_FLASH_REGS + 0x04u) { /* KEYR */
        if (v == STM32_FLASH_KEY1) g_nor.key_stage = 1;
        else if (v == STM32_FLASH_KEY2 && g_nor.key_stage == 1) g_nor.locked = 0;
        else g_nor.violations++;
        return;
    }
    if (addr == STM32_FLASH_REGS + 0x0Cu) { /* SR: write 1 to clear */
        g_nor.sr &= ~v;
        return;
    }
    if (addr != STM32_FLASH_REGS + 0x10u) {
        g_nor.violations++;
        return;
    }
    if (v & (1u << 31)) {
        g_nor.locked = 1;
        g_nor.key_stage = 0;
        g_nor.cr = 0;
        return;
    }
    if (g_nor.locked) {
        g_nor.violations++;
        return;
    }
    g_nor.cr = v;
    if ((v & (1u << 16)) && (v & 2u)) { /* STRT with SER */
        const uint32_t snb = (v >> 3) & 0xFu;
        if (snb != 6u && snb != 7u) {
            g_nor.violations++; /* would erase the firmware */
            return;
        }
        if (!powered()) return;
        memset(g_nor.mem[snb - 6u], 0xFF, SECTOR_SIZE);
        g_nor.erases[snb - 6u]++;
    }
}

static uint8_t n_read8(void *ctx, uint32_t addr) {
    (void)ctx;
    uint8_t *c = cell(addr);
    if (!c) g_nor.violations++;
    return c ? *c : 0;
}

static void n_write8(void *ctx, uint32_t addr, uint8_t v) {
    (void)ctx;
    uint8_t *c = cell(addr);
    if (!c || g_nor.locked || !(g_nor.cr & 1u)) {
        g_nor.violations++;
        g_nor.sr |= 1u << 7; /* PGSERR */
        return;
    }
    if (!powered()) return; /* the power is gone: nothing happens any more */
    if ((*c & v) != v) g_nor.violations++; /* a 0 -> 1 bit: needs an erase first */
    *c &= v;
}

static stm32_flash_t g_store;

static void store_write(void *ctx, uint32_t off, const void *d, uint32_t n) {
    (void)ctx;
    const int rc = stm32_flash_write(&g_store, off, d, n);
    if (g_nor.power_left < 0) CHECK_EQ(rc, 0); /* after a cut, failing is all it can do */
}

static device_t g_dev;
static uint8_t g_img[2048];
static uint8_t g_frame[UPDATE_ENCODED_MAX + 8];

/* Power on: rebuild the shadow (the core's flash view) from the NOR array, boot. */
static void boot(void) {
    g_nor.power_left = -1;
    memset(g_fake.flash, 0xA5, sizeof g_fake.flash); /* RAM is garbage after a power cycle */
    g_store.shadow = g_fake.flash;
    stm32_flash_load(&g_store);
    device_port_t p = fake_port();
    p.flash.write = store_write;
    device_init(&g_dev, &p, 1);
}

static uint32_t image(const char *name) {
    const uint32_t size = factory_model_blob_len;
    memcpy(g_img, factory_model_blob, size);
    memset(g_img + 12, 0, 16);
    memcpy(g_img + 12, name, strlen(name));
    return size;
}

/* Stream an image; stop after `chunks` chunks (no commit) when chunks >= 0. */
static const char *push(uint32_t size, int chunks) {
    char cmd[48];
    size_t n = 0;
    text_str(cmd, sizeof cmd, &n, "UPDATE ");
    text_u32(cmd, sizeof cmd, &n, size);
    text_str(cmd, sizeof cmd, &n, " ");
    text_hex8(cmd, sizeof cmd, &n, crc32(g_img, size));
    fake_cmd(&g_dev, cmd);
    int sent = 0;
    for (uint32_t off = 0; off < size; off += 128u, sent++) {
        if (chunks >= 0 && sent == chunks) return g_fake.out;
        const uint16_t len = (uint16_t)(size - off < 128u ? size - off : 128u);
        fake_send(&g_dev, g_frame, fake_frame(FRAME_DATA, off, g_img + off, len, g_frame,
                                               sizeof g_frame));
    }
    fake_clear_output();
    fake_send(&g_dev, g_frame, fake_frame(FRAME_COMMIT, 0, 0, 0, g_frame, sizeof g_frame));
    return g_fake.out;
}

void test_flash(void) {
    memset(&g_nor, 0xFF, sizeof g_nor.mem);
    g_nor.locked = 1;
    g_nor.power_left = -1;
    const mmio_t io = {n_read32, n_write32, n_read8, n_write8, 0};
    g_store = (stm32_flash_t){.io = io, .sector_addr = {SECTOR6, SECTOR7},
                              .sector_number = {6, 7}, .sector_size = SECTOR_SIZE};
    fake_reset(1);

    /* First boot on erased flash: the factory model lands without a single erase. */
    boot();
    CHECK(g_dev.have_model && g_dev.active_slot == 0);
    CHECK(g_nor.erases[0] == 0 && g_nor.erases[1] == 0 && g_nor.locked);
    const uint32_t factory = g_dev.model.crc;
    boot();
    CHECK(g_dev.active_slot == 0 && g_dev.model.crc == factory);

    /* An update into the erased slot B: no erase either; it survives a power cycle. */
    uint32_t size = image("flash-b");
    const uint32_t hash_b = crc32(g_img, size);
    CHECK(strncmp(push(size, -1), "@OK COMMIT slot=b", 17) == 0);
    CHECK(g_nor.erases[0] == 0 && g_nor.erases[1] == 0);
    boot();
    CHECK(g_dev.active_slot == 1 && g_dev.model.crc == hash_b);

    /* The next one goes over the factory image in slot A: one erase of A's sector. */
    size = image("flash-a");
    const uint32_t hash_a = crc32(g_img, size);
    CHECK(strncmp(push(size, -1), "@OK COMMIT slot=a", 17) == 0);
    CHECK(g_nor.erases[0] == 1 && g_nor.erases[1] == 0);
    boot();
    CHECK(g_dev.active_slot == 0 && g_dev.model.crc == hash_a);

    /* Power cuts at many points of an update into slot B: after every one, the device
     * boots the model in slot A, and B's sector is the only one ever erased. */
    size = image("flash-c");
    const uint32_t hash_c = crc32(g_img, size);
    for (long cut = 1; cut < 1200; cut += 97) {
        boot();
        g_nor.power_left = cut;
        push(size, 4);
        boot();
        CHECK(g_dev.active_slot == 0 && g_dev.model.crc == hash_a);
    }
    CHECK_EQ(g_nor.erases[0], 1);
    CHECK_EQ(g_nor.violations, 0);
    g_store.errors = 0; /* the read-back checks that failed while the power was cut */
    /* Without a cut, an interrupted transfer resumes from the journal's offset. */
    boot();
    char other[64];
    size_t k = 0;
    text_str(other, sizeof other, &k, "UPDATE ");
    text_u32(other, sizeof other, &k, size);
    text_str(other, sizeof other, &k, " 1234abcd");
    CHECK(strstr(fake_cmd(&g_dev, other), "offset=0") != NULL); /* another image: restart */
    fake_send(&g_dev, g_frame, fake_frame(FRAME_ABORT, 0, 0, 0, g_frame, sizeof g_frame));
    push(size, 3);
    boot();
    CHECK(strstr(fake_cmd(&g_dev, "INFO"), "slot=a") != NULL);
    char want[64];
    size_t n = 0;
    text_str(want, sizeof want, &n, "UPDATE ");
    text_u32(want, sizeof want, &n, size);
    text_str(want, sizeof want, &n, " ");
    text_hex8(want, sizeof want, &n, hash_c);
    CHECK(strstr(fake_cmd(&g_dev, want), "offset=384") != NULL);
    fake_send(&g_dev, g_frame, fake_frame(FRAME_ABORT, 0, 0, 0, g_frame, sizeof g_frame));
    CHECK(strncmp(push(size, -1), "@OK COMMIT slot=b", 17) == 0);
    boot();
    CHECK(g_dev.active_slot == 1 && g_dev.model.crc == hash_c);

    /* A full journal (16 records here): metadata keeps working, compacted by one erase.
     * Alternating images make every UPDATE a new session, i.e. a metadata write to the
     * inactive slot A; the active slot B is never touched. */
    const int before = g_nor.erases[0];
    for (int i = 0; i < 20; i++) {
        CHECK(strstr(fake_cmd(&g_dev, (i & 1) ? want : other), "@OK UPDATE slot=a") != NULL);
        fake_send(&g_dev, g_frame, fake_frame(FRAME_ABORT, 0, 0, 0, g_frame, sizeof g_frame));
    }
    CHECK(g_nor.erases[0] == before + 1);
    boot();
    CHECK(g_dev.active_slot == 1 && g_dev.model.crc == hash_c);
    CHECK(strstr(fake_cmd(&g_dev, want), "offset=0") != NULL); /* the last session, intact */
    CHECK_EQ(g_nor.violations, 0);
    CHECK_EQ(g_store.errors, 0u);
}
