/* A register-level I2C bus as the sensor drivers see it: the STM32 I2C1 peripheral on the
 * board, a register-level fake of each chip in the host tests. */
#ifndef EDGELOOP_I2C_BUS_H
#define EDGELOOP_I2C_BUS_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    /* 0 on success; a negative value on NACK, timeout or bus error. */
    int (*read)(void *ctx, uint8_t addr7, uint8_t reg, uint8_t *data, size_t n);
    int (*write)(void *ctx, uint8_t addr7, uint8_t reg, const uint8_t *data, size_t n);
    void *ctx;
} i2c_bus_t;

#endif
