/* ST HTS221 humidity/temperature sensor (X-NUCLEO-IKS01A3, I2C address 0x5F). */
#ifndef EDGELOOP_HTS221_H
#define EDGELOOP_HTS221_H
#include <stdbool.h>

#include "i2c_bus.h"

#define HTS221_ADDR 0x5Fu
#define HTS221_WHO_AM_I 0x0Fu
#define HTS221_WHO_AM_I_VALUE 0xBCu
#define HTS221_AV_CONF 0x10u
#define HTS221_CTRL_REG1 0x20u
#define HTS221_STATUS 0x27u
#define HTS221_HUMIDITY_OUT_L 0x28u
#define HTS221_CALIB_START 0x30u
/* Set on the register address for multi-byte (auto-increment) transfers. */
#define HTS221_AUTO_INCREMENT 0x80u

typedef struct {
    i2c_bus_t bus;
    float t0, t1, h0, h1;
    int16_t t0_out, t1_out, h0_out, h1_out;
} hts221_t;

typedef enum { SENSOR_OK = 0, SENSOR_BUS = -1, SENSOR_ID = -2, SENSOR_NOT_READY = -3, SENSOR_CALIB = -4 } sensor_status_t;

sensor_status_t hts221_init(hts221_t *dev, const i2c_bus_t *bus);
/* degC and %RH from the latest conversion (SENSOR_NOT_READY before the first one). */
sensor_status_t hts221_read(hts221_t *dev, float *temp_c, float *humidity);

#endif
