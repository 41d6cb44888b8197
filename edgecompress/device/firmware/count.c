/* A QEMU TCG plugin (plugin API 1, QEMU 7.2) that counts executed guest instructions.
   Each translation block adds its instruction count to one 64-bit counter, inline. When the
   instruction at address `invoke` or `op` runs, the running total is written to QEMU's log
   ("invoke N", "op N"), so differences between marks are exact instruction counts. At exit
   the total is written too. Usage: -plugin libcount.so,invoke=0x1234,op=0x1240 -d plugin
   -D log.txt */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t executed;
static uint64_t invoke_mark = UINT64_MAX;
static uint64_t op_mark = UINT64_MAX;

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
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    uint64_t address = qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1;
    if (address == invoke_mark || address == op_mark) {
      qemu_plugin_register_vcpu_insn_exec_cb(insn, address == op_mark ? on_op : on_invoke,
                                             QEMU_PLUGIN_CB_NO_REGS, NULL);
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
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_end, NULL);
  return 0;
}
