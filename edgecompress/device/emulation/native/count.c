/* A QEMU TCG plugin (plugin API 1, QEMU 7.2) that counts executed guest instructions.
   Each translation block adds its instruction count to one 64-bit counter, inline, and the
   running total is written to QEMU's log at marks, so differences between marks are exact
   instruction counts. At exit the total is written too. Two kinds of marks:
   - addresses (bare-metal firmware): when the instruction at `invoke` or `op` runs, the
     line "invoke N" or "op N" is written;
   - system calls (user mode): lseek(-1, MARK + k, 0), which fails harmlessly with EBADF,
     writes "start N" (k = 1) or "stop N" (k = 2, 3).
   With blocks=on, each translation block also counts its own instructions; "start" zeroes
   these counts and k = 3 writes "block ADDRESS INSTRUCTIONS" for each block run since,
   which names the code (XNNPACK's kernels) that ran between the two marks.
   Usage: -plugin libcount.so,invoke=0x1234,op=0x1240,blocks=on -d plugin -D log.txt */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define SYSCALL_LSEEK_AARCH64 62
#define MARK 0x45430000u

struct block {
  uint64_t address;
  uint64_t instructions;
  struct block *next;
};

static uint64_t executed;
static uint64_t invoke_mark = UINT64_MAX;
static uint64_t op_mark = UINT64_MAX;
static int count_blocks;
static struct block *blocks;

static void write_line(const char *what) {
  char line[64];
  snprintf(line, sizeof line, "%s %" PRIu64 "\n", what, executed);
  qemu_plugin_outs(line);
}

static void on_invoke(unsigned int vcpu, void *unused) { write_line("invoke"); }
static void on_op(unsigned int vcpu, void *unused) { write_line("op"); }

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  size_t n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
  if (count_blocks) {
    struct block *b = calloc(1, sizeof *b);
    b->address = qemu_plugin_tb_vaddr(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &b->instructions, n);
  }
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    uint64_t address = qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1;
    if (address == invoke_mark || address == op_mark) {
      qemu_plugin_register_vcpu_insn_exec_cb(insn, address == op_mark ? on_op : on_invoke,
                                             QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
  }
}

static void write_blocks(void) {
  char line[64];
  for (struct block *b = blocks; b; b = b->next) {
    if (b->instructions) {
      snprintf(line, sizeof line, "block 0x%" PRIx64 " %" PRIu64 "\n", b->address,
               b->instructions);
      qemu_plugin_outs(line);
    }
  }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t number, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
  if (number != SYSCALL_LSEEK_AARCH64 || a1 != UINT64_MAX || (a2 & ~0xffu) != MARK) {
    return;
  }
  if (a2 == MARK + 1) {
    for (struct block *b = blocks; b; b = b->next) {
      b->instructions = 0;
    }
    write_line("start");
  } else {
    write_line("stop");
    if (a2 == MARK + 3) {
      write_blocks();
    }
  }
}

static void on_end(qemu_plugin_id_t id, void *unused) { write_line("total"); }

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "invoke=", 7) == 0) {
      invoke_mark = strtoull(argv[i] + 7, NULL, 0) & ~(uint64_t)1;
    } else if (strncmp(argv[i], "op=", 3) == 0) {
      op_mark = strtoull(argv[i] + 3, NULL, 0) & ~(uint64_t)1;
    } else if (strcmp(argv[i], "blocks=on") == 0) {
      count_blocks = 1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, on_end, NULL);
  return 0;
}
