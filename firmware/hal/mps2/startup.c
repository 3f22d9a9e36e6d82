/* Vector table and reset handler for Cortex-M3/M4 under QEMU mps2. */
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void SysTick_Handler(void);
void Uart0Rx_Handler(void);

static void default_handler(void) {
    for (;;) {
    }
}

void Reset_Handler(void);

__attribute__((section(".vectors"), used)) static void (*const g_vectors[32])(void) = {
    (void (*)(void))(&_estack),
    Reset_Handler,
    default_handler, /* NMI */
    default_handler, /* HardFault */
    default_handler, /* MemManage */
    default_handler, /* BusFault */
    default_handler, /* UsageFault */
    0, 0, 0, 0,
    default_handler, /* SVC */
    default_handler, /* DebugMon */
    0,
    default_handler, /* PendSV */
    SysTick_Handler,
    Uart0Rx_Handler, /* IRQ 0: CMSDK UART0 RX */
    default_handler, default_handler, default_handler, default_handler, default_handler,
    default_handler, default_handler, default_handler, default_handler, default_handler,
    default_handler, default_handler, default_handler, default_handler, default_handler,
};

void Reset_Handler(void) {
#if defined(__ARM_FP)
    /* CP10/CP11 full access before any float instruction (Cortex-M4F). */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n isb");
#endif
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {
    }
}
