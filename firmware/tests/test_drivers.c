/* The HTS221 and LPS22HH drivers against register-level fakes of the two chips: a register
 * file per chip with each chip's own auto-increment rule and status bits. */
#include <math.h>
#include <string.h>

#include "../hal/stm32f4/hts221.h"
#include "../hal/stm32f4/lps22hh.h"
#include "check.h"

typedef struct {
    uint8_t addr;
    uint8_t regs[256];
    int fail;      /* NACK every transfer */
    int reads, writes;
} fake_chip_t;

typedef struct {
    fake_chip_t *chips[2];
} fake_bus_t;

static fake_chip_t *find(fake_bus_t *bus, uint8_t addr) {
    for (int i = 0; i < 2; i++)
        if (bus->chips[i] && bus->chips[i]->addr == addr) return bus->chips[i];
    return 0;
}

/* HTS221: auto-increment only when the address MSB is set. LPS22HH: when IF_ADD_INC is. */
static int increments(const fake_chip_t *c, uint8_t reg) {
    if (c->addr == HTS221_ADDR) return (reg & 0x80u) != 0;
    return (c->regs[LPS22HH_CTRL_REG2] & 0x10u) != 0;
}

static int bus_read(void *ctx, uint8_t addr, uint8_t reg, uint8_t *d, size_t n) {
    fake_chip_t *c = find(ctx, addr);
    if (!c || c->fail) return -1;
    c->reads++;
    uint8_t r = c->addr == HTS221_ADDR ? (uint8_t)(reg & 0x7Fu) : reg;
    for (size_t i = 0; i < n; i++) {
        d[i] = c->regs[r];
        if (increments(c, reg)) r++;
    }
    return 0;
}

static int bus_write(void *ctx, uint8_t addr, uint8_t reg, const uint8_t *d, size_t n) {
    fake_chip_t *c = find(ctx, addr);
    if (!c || c->fail) return -1;
    c->writes++;
    uint8_t r = c->addr == HTS221_ADDR ? (uint8_t)(reg & 0x7Fu) : reg;
    for (size_t i = 0; i < n; i++) {
        if (r != 0x0Fu) c->regs[r] = d[i]; /* WHO_AM_I is read-only */
        if (increments(c, reg)) r++;
    }
    return 0;
}

static void put16(uint8_t *p, int16_t v) {
    p[0] = (uint8_t)((uint16_t)v & 0xFFu);
    p[1] = (uint8_t)((uint16_t)v >> 8);
}

static void hts221_chip(fake_chip_t *c) {
    memset(c, 0, sizeof *c);
    c->addr = HTS221_ADDR;
    c->regs[HTS221_WHO_AM_I] = HTS221_WHO_AM_I_VALUE;
    c->regs[HTS221_AV_CONF] = 0x1B;
    /* Calibration like a real part: H0 = 33 %, H1 = 66 %, T0 = 15 degC, T1 = 35 degC
     * (T1 = 280/8 needs the MSB bits in 0x35). */
    c->regs[0x30] = 66;
    c->regs[0x31] = 132;
    c->regs[0x32] = 120;
    c->regs[0x33] = 280 & 0xFF;
    c->regs[0x35] = (uint8_t)(((280 >> 8) & 0x3) << 2);
    put16(&c->regs[0x36], -2000); /* H0_T0_OUT */
    put16(&c->regs[0x3A], 4000);  /* H1_T0_OUT */
    put16(&c->regs[0x3C], 100);   /* T0_OUT */
    put16(&c->regs[0x3E], 900);   /* T1_OUT */
}

static void hts221_measure(fake_chip_t *c, int16_t h_out, int16_t t_out) {
    put16(&c->regs[0x28], h_out);
    put16(&c->regs[0x2A], t_out);
    c->regs[HTS221_STATUS] = 0x3;
}

static void check_hts221(void) {
    fake_chip_t chip;
    fake_bus_t fb = {{&chip, 0}};
    const i2c_bus_t bus = {bus_read, bus_write, &fb};
    hts221_t dev;
    float t, h;
    hts221_chip(&chip);
    CHECK_EQ(hts221_init(&dev, &bus), SENSOR_OK);
    CHECK_EQ(chip.regs[HTS221_CTRL_REG1], 0x85); /* PD | BDU | 1 Hz */
    CHECK(fabsf(dev.t1 - 35.0f) < 1e-6f && fabsf(dev.h1 - 66.0f) < 1e-6f);
    CHECK_EQ(hts221_read(&dev, &t, &h), SENSOR_NOT_READY);
    hts221_measure(&chip, 1000, 500); /* halfway between both calibration points */
    CHECK_EQ(hts221_read(&dev, &t, &h), SENSOR_OK);
    CHECK(fabsf(t - 25.0f) < 1e-4f);
    CHECK(fabsf(h - 49.5f) < 1e-4f);
    hts221_measure(&chip, 30000, -300); /* humidity clamps to 100 %, cold reading */
    CHECK_EQ(hts221_read(&dev, &t, &h), SENSOR_OK);
    CHECK(h == 100.0f && fabsf(t - 5.0f) < 1e-4f);
    chip.regs[HTS221_WHO_AM_I] = 0x00;
    CHECK_EQ(hts221_init(&dev, &bus), SENSOR_ID);
    hts221_chip(&chip);
    chip.fail = 1;
    CHECK_EQ(hts221_init(&dev, &bus), SENSOR_BUS);
    hts221_chip(&chip);
    put16(&chip.regs[0x3E], 100); /* T1_OUT == T0_OUT: a bad part, not a division by 0 */
    CHECK_EQ(hts221_init(&dev, &bus), SENSOR_CALIB);
}

static void check_lps22hh(void) {
    fake_chip_t chip;
    memset(&chip, 0, sizeof chip);
    chip.addr = LPS22HH_ADDR;
    chip.regs[LPS22HH_WHO_AM_I] = LPS22HH_WHO_AM_I_VALUE;
    chip.regs[LPS22HH_CTRL_REG2] = 0x10; /* reset value */
    fake_bus_t fb = {{&chip, 0}};
    const i2c_bus_t bus = {bus_read, bus_write, &fb};
    lps22hh_t dev;
    float p, t;
    CHECK_EQ(lps22hh_init(&dev, &bus), SENSOR_OK);
    CHECK_EQ(chip.regs[LPS22HH_CTRL_REG1], 0x12); /* 1 Hz | BDU */
    CHECK_EQ(lps22hh_read(&dev, &p, &t), SENSOR_NOT_READY);
    /* 993.3853 hPa * 4096 = 4068906 = 0x3E162A; 23.45 degC = 2345 = 0x0929. */
    chip.regs[0x28] = 0x2A;
    chip.regs[0x29] = 0x16;
    chip.regs[0x2A] = 0x3E;
    chip.regs[0x2B] = 0x29;
    chip.regs[0x2C] = 0x09;
    chip.regs[LPS22HH_STATUS] = 0x3;
    CHECK_EQ(lps22hh_read(&dev, &p, &t), SENSOR_OK);
    CHECK(fabsf(p - 4068906.0f / 4096.0f) < 1e-3f);
    CHECK(fabsf(t - 23.45f) < 1e-4f);
    /* Negative temperature and the 24-bit sign. */
    chip.regs[0x2A] = 0xFF;
    chip.regs[0x2B] = 0x18;
    chip.regs[0x2C] = 0xFC; /* -1000 = -10.00 degC */
    CHECK_EQ(lps22hh_read(&dev, &p, &t), SENSOR_OK);
    CHECK(p < 0.0f && fabsf(t + 10.0f) < 1e-4f);
    chip.regs[LPS22HH_WHO_AM_I] = 0xB1; /* an LPS22HB, not an HH */
    CHECK_EQ(lps22hh_init(&dev, &bus), SENSOR_ID);
}

void test_drivers(void) {
    check_hts221();
    check_lps22hh();
}
