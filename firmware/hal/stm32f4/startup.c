/* Vector table and reset handler for STM32F4 (Cortex-M4F). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void SysTick_Handler(void);
void Usart2_Handler(void);
void Reset_Handler(void);

static void default_handler(void) {
    for (;;) {
    }
}

#define IRQ_USART2 38

__attribute__((section(".vectors"), used)) static void (*const g_vectors[16 + 82])(void) = {
    [0] = (void (*)(void))(&_estack),
    [1] = Reset_Handler,
    [2] = default_handler,  [3] = default_handler, [4] = default_handler,
    [5] = default_handler,  [6] = default_handler, [11] = default_handler,
    [12] = default_handler, [14] = default_handler,
    [15] = SysTick_Handler,
    [16 + IRQ_USART2] = Usart2_Handler,
};

void Reset_Handler(void) {
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* FPU: CP10/CP11 full access */
    __asm volatile("dsb\n isb");
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {
    }
}
