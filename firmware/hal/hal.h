/* What every target provides. Each hal/<target>/ has the same files: hal.c (this API),
 * main.c (the device loop), and for bare-metal targets startup.c and link.ld. */
#ifndef EDGELOOP_HAL_H
#define EDGELOOP_HAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/device.h"

void hal_init(void);
uint32_t hal_millis(void);
void hal_uart_write(const char *s, size_t n);
/* Next received byte, or -1 when none is waiting. */
int hal_uart_read(void);
/* The persistent region holding the model slots (FLASH_REGION_SIZE bytes). */
uint8_t *hal_flash(void);
void hal_flash_write(uint32_t offset, const void *data, uint32_t len);
/* Fill *out from real sensors; false when the target has none (simulated instead). */
bool hal_read_sensors(reading_t *out);
bool hal_sensors_simulated(void);
/* Wait a little for input or the next tick (a WFI on hardware). */
void hal_idle(void);
void hal_reset(void);
/* End a test run with this exit status (semihosting under QEMU). */
void hal_exit(int status);
/* Debug/test output on the console (semihosting under QEMU, stderr on the host). */
void hal_console(const char *s);

#endif
