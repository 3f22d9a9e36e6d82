#include "flash.h"

#include <string.h>

#include "../../core/crc32.h"

#define KEYR (STM32_FLASH_REGS + 0x04u)
#define SR (STM32_FLASH_REGS + 0x0Cu)
#define CR (STM32_FLASH_REGS + 0x10u)
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xF2u /* OPERR, WRPERR, PGAERR, PGPERR, PGSERR */
#define META_BYTES 60u
#define SPIN_LIMIT 50000000u

static uint32_t journal_records(const stm32_flash_t *f) {
    return (f->sector_size - SLOT_SIZE) / STM32_FLASH_RECORD;
}

static int wait_idle(stm32_flash_t *f) {
    for (uint32_t i = 0; i < SPIN_LIMIT; i++) {
        const uint32_t sr = f->io.read32(f->io.ctx, SR);
        if (!(sr & SR_BSY)) {
            if (sr & SR_ERRORS) {
                f->io.write32(f->io.ctx, SR, sr & SR_ERRORS); /* write 1 to clear */
                f->errors++;
                return -1;
            }
            return 0;
        }
    }
    f->errors++;
    return -1;
}

static void unlock(stm32_flash_t *f) {
    if (f->io.read32(f->io.ctx, CR) & CR_LOCK) {
        f->io.write32(f->io.ctx, KEYR, STM32_FLASH_KEY1);
        f->io.write32(f->io.ctx, KEYR, STM32_FLASH_KEY2);
    }
}

static void lock(stm32_flash_t *f) { f->io.write32(f->io.ctx, CR, CR_LOCK); }

static int erase_sector(stm32_flash_t *f, unsigned slot) {
    if (wait_idle(f)) return -1;
    /* PSIZE x8 (00): valid at any supply voltage. */
    f->io.write32(f->io.ctx, CR, CR_SER | ((uint32_t)f->sector_number[slot] << 3));
    f->io.write32(f->io.ctx, CR, CR_SER | ((uint32_t)f->sector_number[slot] << 3) | CR_STRT);
    const int rc = wait_idle(f);
    f->io.write32(f->io.ctx, CR, 0);
    f->erases++;
    return rc;
}

/* Program bytes (x8) at addr; 0xFF bytes are skipped (erased flash already holds them). */
static int program(stm32_flash_t *f, uint32_t addr, const uint8_t *d, uint32_t n) {
    if (wait_idle(f)) return -1;
    f->io.write32(f->io.ctx, CR, CR_PG);
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (d[i] == 0xFFu) continue;
        f->io.write8(f->io.ctx, addr + i, d[i]);
        rc = wait_idle(f);
        if (rc == 0 && f->io.read8(f->io.ctx, addr + i) != d[i]) {
            f->errors++;
            rc = -1;
        }
    }
    f->io.write32(f->io.ctx, CR, 0);
    return rc;
}

static bool erased(stm32_flash_t *f, uint32_t addr, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (f->io.read8(f->io.ctx, addr + i) != 0xFFu) return false;
    return true;
}

static uint8_t *meta_shadow(stm32_flash_t *f, unsigned slot) { return f->shadow + 64u * slot; }
static uint8_t *data_shadow(stm32_flash_t *f, unsigned slot) {
    return f->shadow + SLOT_DATA_OFFSET + SLOT_SIZE * slot;
}

static int append_record(stm32_flash_t *f, unsigned slot) {
    uint8_t rec[STM32_FLASH_RECORD];
    memcpy(rec, meta_shadow(f, slot), META_BYTES);
    const uint32_t c = crc32(rec, META_BYTES);
    for (unsigned k = 0; k < 4u; k++) rec[META_BYTES + k] = (uint8_t)(c >> (8u * k));
    const uint32_t addr =
        f->sector_addr[slot] + SLOT_SIZE + f->next_record[slot] * STM32_FLASH_RECORD;
    f->next_record[slot]++;
    return program(f, addr, rec, STM32_FLASH_RECORD);
}

/* Erase the slot's sector and write back data[0, keep) and the current metadata. */
static int rewrite(stm32_flash_t *f, unsigned slot, uint32_t keep) {
    if (erase_sector(f, slot)) return -1;
    f->next_record[slot] = 0;
    if (program(f, f->sector_addr[slot], data_shadow(f, slot), keep)) return -1;
    return append_record(f, slot);
}

void stm32_flash_load(stm32_flash_t *f) {
    memset(f->shadow, 0xFF, FLASH_REGION_SIZE);
    for (unsigned s = 0; s < SLOT_COUNT; s++) {
        for (uint32_t i = 0; i < SLOT_SIZE; i++)
            data_shadow(f, s)[i] = f->io.read8(f->io.ctx, f->sector_addr[s] + i);
        f->next_record[s] = journal_records(f);
        for (uint32_t r = 0; r < journal_records(f); r++) {
            uint8_t rec[STM32_FLASH_RECORD];
            const uint32_t addr = f->sector_addr[s] + SLOT_SIZE + r * STM32_FLASH_RECORD;
            for (uint32_t i = 0; i < STM32_FLASH_RECORD; i++)
                rec[i] = f->io.read8(f->io.ctx, addr + i);
            bool blank = true;
            for (uint32_t i = 0; i < STM32_FLASH_RECORD && blank; i++) blank = rec[i] == 0xFFu;
            if (blank) {
                f->next_record[s] = r;
                break;
            }
            const uint32_t stored = (uint32_t)rec[META_BYTES] | ((uint32_t)rec[61] << 8) |
                                    ((uint32_t)rec[62] << 16) | ((uint32_t)rec[63] << 24);
            /* A torn record (power lost while programming it) is skipped: the one
             * before it stays in force. */
            if (crc32(rec, META_BYTES) == stored) memcpy(meta_shadow(f, s), rec, META_BYTES);
        }
    }
}

int stm32_flash_write(stm32_flash_t *f, uint32_t offset, const void *data, uint32_t len) {
    if (offset + len > FLASH_REGION_SIZE || len == 0) return -1;
    memcpy(f->shadow + offset, data, len);
    unlock(f);
    int rc;
    if (offset < SLOT_DATA_OFFSET) {
        const unsigned slot = offset / 64u;
        rc = f->next_record[slot] < journal_records(f) ? append_record(f, slot)
                                                       : rewrite(f, slot, SLOT_SIZE);
    } else {
        const unsigned slot = (offset - SLOT_DATA_OFFSET) / SLOT_SIZE;
        const uint32_t at = (offset - SLOT_DATA_OFFSET) % SLOT_SIZE;
        const uint32_t addr = f->sector_addr[slot] + at;
        if (erased(f, addr, len)) {
            rc = program(f, addr, data, len);
        } else {
            /* A new image over an old one. The update protocol writes a slot in order,
             * so what lies beyond this write belongs to the old image: drop it. */
            memset(data_shadow(f, slot) + at + len, 0xFF, SLOT_SIZE - at - len);
            rc = rewrite(f, slot, at + len);
        }
    }
    lock(f);
    return rc;
}

static uint32_t hw_read32(void *ctx, uint32_t addr) {
    (void)ctx;
    return *(volatile uint32_t *)(uintptr_t)addr;
}
static void hw_write32(void *ctx, uint32_t addr, uint32_t v) {
    (void)ctx;
    *(volatile uint32_t *)(uintptr_t)addr = v;
}
static uint8_t hw_read8(void *ctx, uint32_t addr) {
    (void)ctx;
    return *(volatile uint8_t *)(uintptr_t)addr;
}
static void hw_write8(void *ctx, uint32_t addr, uint8_t v) {
    (void)ctx;
    *(volatile uint8_t *)(uintptr_t)addr = v;
}

const mmio_t stm32_mmio = {hw_read32, hw_write32, hw_read8, hw_write8, 0};
