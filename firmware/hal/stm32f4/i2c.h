/* STM32F4 I2C1 master (PB8 SCL, PB9 SDA: the Arduino header the IKS01A3 plugs into). */
#ifndef EDGELOOP_STM32_I2C_H
#define EDGELOOP_STM32_I2C_H
#include "i2c_bus.h"

void stm32_i2c1_init(void);
extern const i2c_bus_t stm32_i2c1;

#endif
