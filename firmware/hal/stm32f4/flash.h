/* Model slots in the STM32F4's own flash, behind the core's byte-addressable view.
 *
 * The core reads and writes a RAM shadow of the slot region (FLASH_REGION_SIZE bytes);
 * every write also goes to flash, one sector per slot:
 *
 *   sector + 0              slot data (SLOT_SIZE bytes), programmed in order
 *   sector + SLOT_SIZE      a journal of 64-byte records: the slot's metadata (60 bytes of
 *                           the shadow's meta area) + CRC-32; the last valid record wins
 *
 * NOR flash only programs 1 -> 0 and erases by sector, so metadata updates append a
 * record (no erase), data lands on erased flash (no erase), and only a write over
 * programmed data (a new image into a used slot) or a full journal erases the sector:
 * about one erase per model update. Each slot has its own sector, so erasing one never
 * touches the other slot's model or metadata: power loss mid-update leaves the old model.
 *
 * Registers are reached through mmio_t so the host tests run this code against a
 * register-level fake of the FLASH peripheral and a NOR array. */
#ifndef EDGELOOP_STM32_FLASH_H
#define EDGELOOP_STM32_FLASH_H
#include <stdbool.h>
#include <stdint.h>

#include "../../core/slots.h"

#define STM32_FLASH_REGS 0x40023C00u
#define STM32_FLASH_KEY1 0x45670123u
#define STM32_FLASH_KEY2 0xCDEF89ABu
#define STM32_FLASH_RECORD 64u

typedef struct {
    uint32_t (*read32)(void *ctx, uint32_t addr);
    void (*write32)(void *ctx, uint32_t addr, uint32_t value);
    uint8_t (*read8)(void *ctx, uint32_t addr);
    void (*write8)(void *ctx, uint32_t addr, uint8_t value);
    void *ctx;
} mmio_t;

typedef struct {
    mmio_t io;
    uint32_t sector_addr[SLOT_COUNT]; /* flash address of each slot's sector */
    uint8_t sector_number[SLOT_COUNT]; /* its SNB for the erase */
    uint32_t sector_size;
    uint8_t *shadow; /* FLASH_REGION_SIZE bytes: what the core sees */
    uint32_t next_record[SLOT_COUNT];
    uint32_t erases, errors;
} stm32_flash_t;

/* Rebuild the shadow from flash (at boot). */
void stm32_flash_load(stm32_flash_t *f);
/* The core's flash_write: shadow + flash. Returns 0, or -1 on a flash error. */
int stm32_flash_write(stm32_flash_t *f, uint32_t offset, const void *data, uint32_t len);
/* mmio_t for the real chip. */
extern const mmio_t stm32_mmio;

#endif
