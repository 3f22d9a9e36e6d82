/* Register-level I2C1 master, polling, 100 kHz from a 16 MHz APB1 (HSI, no PLL).
 * Every wait is bounded: a missing shield (or an emulator without I2C) gives an error,
 * never a hang, and the firmware falls back to simulated sensors. */
#include "i2c.h"

#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB1ENR REG(0x40023840u)
#define GPIOB 0x40020400u
#define GPIOB_MODER REG(GPIOB + 0x00u)
#define GPIOB_OTYPER REG(GPIOB + 0x04u)
#define GPIOB_OSPEEDR REG(GPIOB + 0x08u)
#define GPIOB_PUPDR REG(GPIOB + 0x0Cu)
#define GPIOB_AFRH REG(GPIOB + 0x24u)
#define I2C1 0x40005400u
#define I2C_CR1 REG(I2C1 + 0x00u)
#define I2C_CR2 REG(I2C1 + 0x04u)
#define I2C_DR REG(I2C1 + 0x10u)
#define I2C_SR1 REG(I2C1 + 0x14u)
#define I2C_SR2 REG(I2C1 + 0x18u)
#define I2C_CCR REG(I2C1 + 0x1Cu)
#define I2C_TRISE REG(I2C1 + 0x20u)
#define CR1_PE (1u << 0)
#define CR1_START (1u << 8)
#define CR1_STOP (1u << 9)
#define CR1_ACK (1u << 10)
#define SR1_SB (1u << 0)
#define SR1_ADDR (1u << 1)
#define SR1_BTF (1u << 2)
#define SR1_RXNE (1u << 6)
#define SR1_TXE (1u << 7)
#define SR1_AF (1u << 10)
#define SPIN_LIMIT 20000u

void stm32_i2c1_init(void) {
    RCC_AHB1ENR |= 1u << 1;  /* GPIOB */
    RCC_APB1ENR |= 1u << 21; /* I2C1 */
    /* PB8/PB9: alternate function 4, open drain, pull-up, fast. */
    GPIOB_MODER = (GPIOB_MODER & ~(0xFu << 16)) | (0xAu << 16);
    GPIOB_OTYPER |= (1u << 8) | (1u << 9);
    GPIOB_OSPEEDR |= 0xFu << 16;
    GPIOB_PUPDR = (GPIOB_PUPDR & ~(0xFu << 16)) | (0x5u << 16);
    GPIOB_AFRH = (GPIOB_AFRH & ~0xFFu) | 0x44u;
    I2C_CR1 = 0;
    I2C_CR2 = 16u;   /* APB1 MHz */
    I2C_CCR = 80u;   /* 16 MHz / (2 * 100 kHz) */
    I2C_TRISE = 17u; /* 1000 ns * 16 MHz + 1 */
    I2C_CR1 = CR1_PE;
}

static int wait_sr1(uint32_t bits) {
    for (uint32_t i = 0; i < SPIN_LIMIT; i++) {
        const uint32_t sr1 = I2C_SR1;
        if (sr1 & SR1_AF) {
            I2C_SR1 = ~SR1_AF;
            return -1; /* NACK */
        }
        if (sr1 & bits) return 0;
    }
    return -2; /* timeout */
}

static int start(uint8_t addr7, int read) {
    I2C_CR1 |= CR1_START;
    if (wait_sr1(SR1_SB)) return -1;
    I2C_DR = (uint32_t)(addr7 << 1) | (read ? 1u : 0u);
    if (wait_sr1(SR1_ADDR)) return -1;
    return 0;
}

static int fail(void) {
    I2C_CR1 |= CR1_STOP;
    return -1;
}

static int i2c_write(void *ctx, uint8_t addr7, uint8_t reg, const uint8_t *data, size_t n) {
    (void)ctx;
    if (start(addr7, 0)) return fail();
    (void)I2C_SR2; /* reading SR2 after SR1 clears ADDR */
    I2C_DR = reg;
    for (size_t i = 0; i < n; i++) {
        if (wait_sr1(SR1_TXE)) return fail();
        I2C_DR = data[i];
    }
    if (wait_sr1(SR1_BTF)) return fail();
    I2C_CR1 |= CR1_STOP;
    return 0;
}

static int i2c_read(void *ctx, uint8_t addr7, uint8_t reg, uint8_t *data, size_t n) {
    (void)ctx;
    if (n == 0) return 0;
    if (start(addr7, 0)) return fail();
    (void)I2C_SR2;
    I2C_DR = reg;
    if (wait_sr1(SR1_BTF)) return fail();
    /* Repeated start, then read with ACK on every byte but the last. */
    I2C_CR1 |= CR1_ACK;
    if (start(addr7, 1)) return fail();
    if (n == 1) I2C_CR1 &= ~CR1_ACK;
    (void)I2C_SR2;
    if (n == 1) I2C_CR1 |= CR1_STOP;
    for (size_t i = 0; i < n; i++) {
        if (i + 2u == n) {
            I2C_CR1 &= ~CR1_ACK;
        }
        if (wait_sr1(SR1_RXNE)) return fail();
        if (i + 2u == n) I2C_CR1 |= CR1_STOP;
        data[i] = (uint8_t)I2C_DR;
    }
    return 0;
}

const i2c_bus_t stm32_i2c1 = {i2c_read, i2c_write, 0};
