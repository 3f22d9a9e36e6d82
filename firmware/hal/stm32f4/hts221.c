#include "hts221.h"

static int16_t s16(const uint8_t *p) { return (int16_t)((uint16_t)p[0] | (uint16_t)(p[1] << 8)); }

sensor_status_t hts221_init(hts221_t *dev, const i2c_bus_t *bus) {
    dev->bus = *bus;
    uint8_t id = 0;
    if (bus->read(bus->ctx, HTS221_ADDR, HTS221_WHO_AM_I, &id, 1) != 0) return SENSOR_BUS;
    if (id != HTS221_WHO_AM_I_VALUE) return SENSOR_ID;
    /* Calibration (datasheet section 8): 16 bytes at 0x30..0x3F, read in one burst. */
    uint8_t c[16];
    if (bus->read(bus->ctx, HTS221_ADDR, HTS221_CALIB_START | HTS221_AUTO_INCREMENT, c, 16) != 0)
        return SENSOR_BUS;
    dev->h0 = (float)c[0] / 2.0f;
    dev->h1 = (float)c[1] / 2.0f;
    dev->t0 = (float)(((uint16_t)(c[5] & 0x3u) << 8) | c[2]) / 8.0f;
    dev->t1 = (float)(((uint16_t)(c[5] & 0xCu) << 6) | c[3]) / 8.0f;
    dev->h0_out = s16(&c[6]);
    dev->h1_out = s16(&c[10]);
    dev->t0_out = s16(&c[12]);
    dev->t1_out = s16(&c[14]);
    if (dev->h1_out == dev->h0_out || dev->t1_out == dev->t0_out) return SENSOR_CALIB;
    /* AV_CONF default averaging; CTRL_REG1: power on, block data update, 1 Hz. */
    const uint8_t ctrl = 0x80u | 0x04u | 0x01u;
    if (bus->write(bus->ctx, HTS221_ADDR, HTS221_CTRL_REG1, &ctrl, 1) != 0) return SENSOR_BUS;
    return SENSOR_OK;
}

sensor_status_t hts221_read(hts221_t *dev, float *temp_c, float *humidity) {
    uint8_t status = 0, raw[4];
    if (dev->bus.read(dev->bus.ctx, HTS221_ADDR, HTS221_STATUS, &status, 1) != 0) return SENSOR_BUS;
    if ((status & 0x3u) != 0x3u) return SENSOR_NOT_READY;
    if (dev->bus.read(dev->bus.ctx, HTS221_ADDR, HTS221_HUMIDITY_OUT_L | HTS221_AUTO_INCREMENT,
                      raw, 4) != 0)
        return SENSOR_BUS;
    const float h_out = (float)s16(&raw[0]), t_out = (float)s16(&raw[2]);
    *humidity = dev->h0 + (h_out - (float)dev->h0_out) * (dev->h1 - dev->h0) /
                              (float)(dev->h1_out - dev->h0_out);
    if (*humidity < 0.0f) *humidity = 0.0f;
    if (*humidity > 100.0f) *humidity = 100.0f;
    *temp_c = dev->t0 + (t_out - (float)dev->t0_out) * (dev->t1 - dev->t0) /
                            (float)(dev->t1_out - dev->t0_out);
    return SENSOR_OK;
}
