/* Host HAL: the device as a process. The serial line is stdin/stdout or a pty; the model
 * slots live in a file mapped with MAP_SHARED, so they survive a crash, kill -9 or a
 * RESET command just as flash survives a power cycle. */
#define _GNU_SOURCE
#include "../hal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int g_in = 0, g_out = 1;
static uint8_t *g_flash;
static uint8_t g_ram_flash[FLASH_REGION_SIZE];
static struct timespec g_start;

void hal_host_set_fds(int in, int out) {
    g_in = in;
    g_out = out;
}

int hal_host_open_flash(const char *path) {
    if (!path) {
        memset(g_ram_flash, 0xFF, sizeof g_ram_flash);
        g_flash = g_ram_flash;
        return 0;
    }
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return -1;
    off_t size = lseek(fd, 0, SEEK_END);
    if (size != (off_t)FLASH_REGION_SIZE) {
        /* A new (or foreign) file: an erased part. */
        static uint8_t erased[FLASH_REGION_SIZE];
        memset(erased, 0xFF, sizeof erased);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, erased, sizeof erased, 0) != (ssize_t)sizeof erased) {
            close(fd);
            return -1;
        }
    }
    void *p = mmap(NULL, FLASH_REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -1;
    g_flash = p;
    return 0;
}

void hal_init(void) { clock_gettime(CLOCK_MONOTONIC, &g_start); }

uint32_t hal_millis(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint32_t)((now.tv_sec - g_start.tv_sec) * 1000 + (now.tv_nsec - g_start.tv_nsec) / 1000000);
}

void hal_uart_write(const char *s, size_t n) {
    while (n) {
        ssize_t w = write(g_out, s, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return; /* the reader went away: a UART does not care either */
        }
        s += w;
        n -= (size_t)w;
    }
}

static uint8_t g_rx[512];
static ssize_t g_rx_len, g_rx_pos;
static int g_eof;

int hal_uart_read(void) {
    if (g_rx_pos < g_rx_len) return g_rx[g_rx_pos++];
    struct pollfd p = {.fd = g_in, .events = POLLIN};
    if (g_eof || poll(&p, 1, 0) <= 0) return -1;
    ssize_t r = read(g_in, g_rx, sizeof g_rx);
    if (r == 0) g_eof = 1;
    if (r <= 0) return -1;
    g_rx_len = r;
    g_rx_pos = 1;
    return g_rx[0];
}

int hal_host_input_closed(void) { return g_eof; }

uint8_t *hal_flash(void) { return g_flash; }

void hal_flash_write(uint32_t offset, const void *data, uint32_t len) {
    if (offset + len <= FLASH_REGION_SIZE) memcpy(g_flash + offset, data, len);
}

bool hal_read_sensors(reading_t *out) {
    (void)out;
    return false;
}

bool hal_sensors_simulated(void) { return true; }

void hal_idle(void) {
    struct pollfd p = {.fd = g_in, .events = POLLIN};
    if (!g_eof) poll(&p, 1, 1);
    else usleep(1000);
}

void hal_reset(void) {}

void hal_exit(int status) { exit(status); }

void hal_console(const char *s) { fputs(s, stderr); }
