/* The device as a host process: `edgeloop-device [--flash FILE] [--seed N] [--pty]`.
 * With --pty it prints the pty's path on stderr and talks over it, like a USB serial
 * device; otherwise over stdin/stdout. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "../../models/factory_model.h"
#include "../hal.h"

void hal_host_set_fds(int in, int out);
int hal_host_open_flash(const char *path);
int hal_host_input_closed(void);

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

int main(int argc, char **argv) {
    const char *flash = NULL;
    uint32_t seed = 1;
    int use_pty = 0, exit_on_eof = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--flash") == 0 && i + 1 < argc) flash = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--pty") == 0) use_pty = 1;
        else {
            fprintf(stderr, "usage: %s [--flash FILE] [--seed N] [--pty]\n", argv[0]);
            return 2;
        }
    }
    if (hal_host_open_flash(flash) != 0) {
        perror("flash");
        return 1;
    }
    if (use_pty) {
        int master = posix_openpt(O_RDWR | O_NOCTTY);
        if (master < 0 || grantpt(master) || unlockpt(master)) {
            perror("pty");
            return 1;
        }
        struct termios t;
        tcgetattr(master, &t);
        cfmakeraw(&t);
        tcsetattr(master, TCSANOW, &t);
        fprintf(stderr, "pty %s\n", ptsname(master));
        hal_host_set_fds(master, master);
        exit_on_eof = 0;
    }
    hal_init();
    device_port_t port = {
        .millis = port_millis, .write = port_write, .read_sensors = port_sensors,
        .flash = {.base = hal_flash(), .write = port_flash_write, .ctx = NULL},
        .factory_model = factory_model_blob, .factory_model_size = factory_model_blob_len,
        .simulated = hal_sensors_simulated(), .ctx = NULL,
    };
    static device_t dev;
    for (;;) {
        /* A RESET restarts the device from its flash, like the reset pin. */
        device_init(&dev, &port, seed);
        for (;;) {
            int c;
            while ((c = hal_uart_read()) >= 0) device_rx(&dev, (uint8_t)c);
            if (device_poll(&dev) == DEVICE_RESET_REQUESTED) break;
            if (exit_on_eof && hal_host_input_closed()) return 0;
            hal_idle();
        }
    }
}
