/* Vector table and reset code for the emulated Cortex-M boards (all boot from address 0).
   Reset enables the FPU / MVE when the build uses them, then hands over to newlib's
   semihosting start-up (_start from rdimon-crt0), which zeroes .bss, runs constructors,
   fetches argv and calls main. Every fault prints its exception number through
   semihosting and ends QEMU with a non-zero status instead of spinning forever. */

#include <stdint.h>

extern void _start(void);
extern uint32_t __stack;

static void semihost(uint32_t operation, const void *argument) {
  register uint32_t r0 __asm__("r0") = operation;
  register const void *r1 __asm__("r1") = argument;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
  __asm__ volatile("dsb\n\tisb");
#endif
  _start();
}

void Fault_Handler(void) {
  char message[] = "edgecompress: fault: exception 00 (3 HardFault, 4 MemManage, "
                   "5 BusFault, 6 UsageFault)\n";
  uint32_t exception;
  __asm__ volatile("mrs %0, ipsr" : "=r"(exception));
  exception &= 0x1FF;
  message[31] = (char)('0' + (exception / 10) % 10);
  message[32] = (char)('0' + exception % 10);
  semihost(0x04, message);                    /* SYS_WRITE0 */
  semihost(0x18, (const void *)0x20023);      /* SYS_EXIT, run-time error */
  for (;;) {
  }
}

__attribute__((section(".vectors"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&__stack, Reset_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler};
