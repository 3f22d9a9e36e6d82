/* mps2 HAL: CMSDK APB UART0 (0x40004000) with an RX interrupt into a ring buffer, SysTick
 * at 1 kHz from the 25 MHz system clock, the model slots in RAM that survives a system
 * reset, semihosting for test output and exit codes. */
#include "../hal.h"

#define UART0 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0 + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART0 + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART0 + 0x08u))
#define UART_INTSTATUS (*(volatile uint32_t *)(UART0 + 0x0Cu))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0 + 0x10u))
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define SCB_AIRCR (*(volatile uint32_t *)0xE000ED0Cu)
#define SYSCLK_HZ 25000000u
/* Outside the linker's RAM region: see link.ld. */
#define SIMFLASH ((uint8_t *)0x20300000u)

static volatile uint32_t g_ms;
static volatile uint8_t g_rx[1024];
static volatile uint32_t g_rx_head, g_rx_tail;

void SysTick_Handler(void) { g_ms++; }

static void drain_rx(void) {
    while (UART_STATE & 2u) {
        uint8_t b = (uint8_t)UART_DATA;
        uint32_t next = (g_rx_head + 1u) % sizeof g_rx;
        if (next != g_rx_tail) { /* full: drop, the update protocol NAKs and resends */
            g_rx[g_rx_head] = b;
            g_rx_head = next;
        }
    }
}

void Uart0Rx_Handler(void) {
    /* Clear first, then drain: a byte landing between the last read and a late clear
     * would leave RX full with no interrupt pending, and the line would stall. */
    UART_INTSTATUS = 2u;
    drain_rx();
}

void hal_init(void) {
    UART_BAUDDIV = SYSCLK_HZ / 115200u;
    UART_CTRL = 1u | 2u | 8u; /* TX, RX, RX interrupt */
    NVIC_ISER0 = 1u << 0;
    SYST_RVR = SYSCLK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
}

uint32_t hal_millis(void) { return g_ms; }

void hal_uart_write(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = (uint8_t)s[i];
    }
}

int hal_uart_read(void) {
    if (g_rx_tail == g_rx_head) {
        /* Belt and braces: poll the data register too, with the interrupt masked. */
        __asm volatile("cpsid i");
        drain_rx();
        __asm volatile("cpsie i");
    }
    if (g_rx_tail == g_rx_head) return -1;
    uint8_t b = g_rx[g_rx_tail];
    g_rx_tail = (g_rx_tail + 1u) % sizeof g_rx;
    return b;
}

uint8_t *hal_flash(void) { return SIMFLASH; }

void hal_flash_write(uint32_t offset, const void *data, uint32_t len) {
    const uint8_t *d = data;
    for (uint32_t i = 0; i < len && offset + i < FLASH_REGION_SIZE; i++) SIMFLASH[offset + i] = d[i];
}

bool hal_read_sensors(reading_t *out) {
    (void)out;
    return false;
}

bool hal_sensors_simulated(void) { return true; }

void hal_idle(void) { __asm volatile("wfi"); }

void hal_reset(void) {
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
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
    /* SYS_EXIT_EXTENDED: QEMU exits with the subcode, so the test's status is QEMU's. */
    const uint32_t block[2] = {0x20026u, (uint32_t)status};
    semihost(0x20, block);
    for (;;) {
    }
}

void hal_console(const char *s) { semihost(0x04, s); }

/* Instruction/cycle counting for the inference benchmark: SysTick's current value. */
uint32_t hal_systick_value(void) { return SYST_CVR; }
uint32_t hal_systick_reload(void) { return SYST_RVR; }
