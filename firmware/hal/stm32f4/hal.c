/* STM32F4 HAL: USART2 (PA2/PA3, the ST-LINK virtual COM port) at 115200 8N1 from the
 * 16 MHz HSI, RX interrupt into a ring buffer; SysTick at 1 kHz; the IKS01A3's HTS221 and
 * LPS22HH over I2C1; model slots in flash (flash.c) behind an SRAM shadow. */
#include "../hal.h"

#include "flash.h"
#include "hts221.h"
#include "i2c.h"
#include "lps22hh.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_CR REG(0x40023800u)
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB1ENR REG(0x40023840u)
#define GPIOA 0x40020000u
#define GPIOA_MODER REG(GPIOA + 0x00u)
#define GPIOA_AFRL REG(GPIOA + 0x20u)
#define USART2 0x40004400u
#define USART_SR REG(USART2 + 0x00u)
#define USART_DR REG(USART2 + 0x04u)
#define USART_BRR REG(USART2 + 0x08u)
#define USART_CR1 REG(USART2 + 0x0Cu)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER1 REG(0xE000E104u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define HCLK_HZ 16000000u
#define SIMFLASH ((uint8_t *)0x2000F000u)

static volatile uint32_t g_ms;
static volatile uint8_t g_rx[1024];
static volatile uint32_t g_rx_head, g_rx_tail;
static hts221_t g_hts;
static lps22hh_t g_lps;
static bool g_sensors_ok;
static reading_t g_last;
/* The model slots: flash sectors 6 and 7 (128 KiB each at 0x08040000 and 0x08060000 on
 * the 512 KiB F401RE/F411RE), seen by the core through the SRAM shadow. */
static stm32_flash_t g_store = {
    .sector_addr = {0x08040000u, 0x08060000u}, .sector_number = {6u, 7u},
    .sector_size = 128u * 1024u, .shadow = SIMFLASH,
};
static bool g_real_flash;

void SysTick_Handler(void) { g_ms++; }

static void drain_rx(void) {
    while (USART_SR & (1u << 5)) { /* RXNE; reading DR clears it */
        const uint8_t b = (uint8_t)USART_DR;
        const uint32_t next = (g_rx_head + 1u) % sizeof g_rx;
        if (next != g_rx_tail) {
            g_rx[g_rx_head] = b;
            g_rx_head = next;
        }
    }
}

void Usart2_Handler(void) { drain_rx(); }

void hal_init(void) {
    RCC_AHB1ENR |= 1u << 0;  /* GPIOA */
    RCC_APB1ENR |= 1u << 17; /* USART2 */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4); /* PA2, PA3: AF */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8); /* AF7 = USART2 */
    USART_BRR = (HCLK_HZ + 115200u / 2u) / 115200u;
    uint32_t cr1 = (1u << 13) | (1u << 5) | (1u << 3) | (1u << 2); /* UE, RXNEIE, TE, RE */
    if (RCC_CR == 0u) {
        /* Only under QEMU (whose RCC reads as 0; on silicon HSION/HSIRDY are set): QEMU
         * 7.2's USART model takes bit 14, reserved on the chip, as UE, and drops every
         * received byte without it. */
        cr1 |= 1u << 14;
    }
    USART_CR1 = cr1;
    NVIC_ISER1 = 1u << (38 - 32);
    SYST_RVR = HCLK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;
    /* QEMU's STM32 emulates neither RCC nor the flash controller: there the slots stay
     * in the SRAM shadow alone (kept across resets, as on the mps2 machines). */
    g_real_flash = RCC_CR != 0u;
    if (g_real_flash) {
        g_store.io = stm32_mmio;
        stm32_flash_load(&g_store);
    }
    stm32_i2c1_init();
    g_sensors_ok = hts221_init(&g_hts, &stm32_i2c1) == SENSOR_OK &&
                   lps22hh_init(&g_lps, &stm32_i2c1) == SENSOR_OK;
}

uint32_t hal_millis(void) { return g_ms; }

void hal_uart_write(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (uint32_t spin = 0; !(USART_SR & (1u << 7)) && spin < 100000u; spin++) {
        }
        USART_DR = (uint8_t)s[i];
    }
}

int hal_uart_read(void) {
    if (g_rx_tail == g_rx_head) {
        __asm volatile("cpsid i");
        drain_rx();
        __asm volatile("cpsie i");
    }
    if (g_rx_tail == g_rx_head) return -1;
    const uint8_t b = g_rx[g_rx_tail];
    g_rx_tail = (g_rx_tail + 1u) % sizeof g_rx;
    return b;
}

uint8_t *hal_flash(void) { return SIMFLASH; }

void hal_flash_write(uint32_t offset, const void *data, uint32_t len) {
    if (g_real_flash) {
        (void)stm32_flash_write(&g_store, offset, data, len); /* errors: counted in g_store */
        return;
    }
    const uint8_t *d = data;
    for (uint32_t i = 0; i < len && offset + i < FLASH_REGION_SIZE; i++) SIMFLASH[offset + i] = d[i];
}

bool hal_read_sensors(reading_t *out) {
    if (!g_sensors_ok) return false;
    float t, h, p, t2;
    /* Between conversions (RATE faster than the chips' 1 Hz) repeat the last values. */
    if (hts221_read(&g_hts, &t, &h) == SENSOR_OK) {
        g_last.v[0] = t;
        g_last.v[1] = h;
    }
    if (lps22hh_read(&g_lps, &p, &t2) == SENSOR_OK) g_last.v[2] = p;
    *out = g_last;
    return true;
}

bool hal_sensors_simulated(void) { return !g_sensors_ok; }

void hal_idle(void) { __asm volatile("wfi"); }

void hal_reset(void) {
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u;
    for (;;) {
    }
}

static int semihost(int op, const void *arg) {
    register int r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void hal_exit(int status) {
    const uint32_t block[2] = {0x20026u, (uint32_t)status};
    semihost(0x20, block);
    for (;;) {
    }
}

void hal_console(const char *s) { semihost(0x04, s); }
