#include "lps22hh.h"

sensor_status_t lps22hh_init(lps22hh_t *dev, const i2c_bus_t *bus) {
    dev->bus = *bus;
    uint8_t id = 0;
    if (bus->read(bus->ctx, LPS22HH_ADDR, LPS22HH_WHO_AM_I, &id, 1) != 0) return SENSOR_BUS;
    if (id != LPS22HH_WHO_AM_I_VALUE) return SENSOR_ID;
    /* CTRL_REG2: keep register auto-increment on (IF_ADD_INC, its reset value). */
    const uint8_t ctrl2 = 0x10u;
    /* CTRL_REG1: 1 Hz output data rate, block data update. */
    const uint8_t ctrl1 = (0x1u << 4) | 0x02u;
    if (bus->write(bus->ctx, LPS22HH_ADDR, LPS22HH_CTRL_REG2, &ctrl2, 1) != 0 ||
        bus->write(bus->ctx, LPS22HH_ADDR, LPS22HH_CTRL_REG1, &ctrl1, 1) != 0)
        return SENSOR_BUS;
    return SENSOR_OK;
}

sensor_status_t lps22hh_read(lps22hh_t *dev, float *pressure_hpa, float *temp_c) {
    uint8_t status = 0, raw[5];
    if (dev->bus.read(dev->bus.ctx, LPS22HH_ADDR, LPS22HH_STATUS, &status, 1) != 0) return SENSOR_BUS;
    if ((status & 0x3u) != 0x3u) return SENSOR_NOT_READY;
    if (dev->bus.read(dev->bus.ctx, LPS22HH_ADDR, LPS22HH_PRESS_OUT_XL, raw, 5) != 0) return SENSOR_BUS;
    /* 24-bit two's complement, 4096 LSB/hPa; temperature 100 LSB/degC. */
    uint32_t p = (uint32_t)raw[0] | ((uint32_t)raw[1] << 8) | ((uint32_t)raw[2] << 16);
    if (p & 0x800000u) p |= 0xFF000000u;
    *pressure_hpa = (float)(int32_t)p / 4096.0f;
    *temp_c = (float)(int16_t)((uint16_t)raw[3] | (uint16_t)(raw[4] << 8)) / 100.0f;
    return SENSOR_OK;
}
