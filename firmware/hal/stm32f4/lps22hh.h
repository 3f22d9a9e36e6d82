/* ST LPS22HH pressure sensor (X-NUCLEO-IKS01A3, I2C address 0x5D). */
#ifndef EDGELOOP_LPS22HH_H
#define EDGELOOP_LPS22HH_H
#include "hts221.h" /* sensor_status_t */
#include "i2c_bus.h"

#define LPS22HH_ADDR 0x5Du
#define LPS22HH_WHO_AM_I 0x0Fu
#define LPS22HH_WHO_AM_I_VALUE 0xB3u
#define LPS22HH_CTRL_REG1 0x10u
#define LPS22HH_CTRL_REG2 0x11u
#define LPS22HH_STATUS 0x27u
#define LPS22HH_PRESS_OUT_XL 0x28u

typedef struct {
    i2c_bus_t bus;
} lps22hh_t;

sensor_status_t lps22hh_init(lps22hh_t *dev, const i2c_bus_t *bus);
/* hPa and degC from the latest conversion. */
sensor_status_t lps22hh_read(lps22hh_t *dev, float *pressure_hpa, float *temp_c);

#endif
