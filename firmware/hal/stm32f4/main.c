#include "../../models/factory_model.h"
#include "../hal.h"

static uint32_t port_millis(void *ctx) {
    (void)ctx;
    return hal_millis();
}
static void port_write(void *ctx, const char *s, size_t n) {
    (void)ctx;
    hal_uart_write(s, n);
}
static bool port_sensors(void *ctx, reading_t *r) {
    (void)ctx;
    return hal_read_sensors(r);
}
static void port_flash_write(void *ctx, uint32_t off, const void *d, uint32_t n) {
    (void)ctx;
    hal_flash_write(off, d, n);
}

static device_t g_dev;

int main(void) {
    hal_init();
    const device_port_t port = {
        .millis = port_millis, .write = port_write, .read_sensors = port_sensors,
        .flash = {.base = hal_flash(), .write = port_flash_write, .ctx = 0},
        .factory_model = factory_model_blob, .factory_model_size = factory_model_blob_len,
        .simulated = hal_sensors_simulated(), .ctx = 0,
    };
    device_init(&g_dev, &port, 1u);
    for (;;) {
        int c;
        while ((c = hal_uart_read()) >= 0) device_rx(&g_dev, (uint8_t)c);
        if (device_poll(&g_dev) == DEVICE_RESET_REQUESTED) hal_reset();
        hal_idle();
    }
}
