// edgecompress's model-agnostic TFLite Micro runner for emulated Cortex-M boards.
//
// usage (semihosting arguments): runner MODEL.tflite INPUTS.bin OUTPUTS.bin
// INPUTS.bin holds whole records, each the bytes of every input tensor in order; for each
// record the runner invokes the model once and appends the bytes of every output tensor
// to OUTPUTS.bin. It prints "arena <bytes used>" and "images <count>" on stdout.
// edgecompress_mark_invoke() brackets each Invoke() and edgecompress_mark() each
// operator (ops.h wraps every kernel's invoke), so a QEMU plugin can count the
// instructions between the marks.
// Exit status: 0 done, 2 bad arguments or files, 3 the model does not allocate,
// 4 an Invoke() failed.

#include <cstdio>
#include <cstring>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/kernels/micro_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

// Distinct bodies and noipa keep the compiler from merging or inlining the two marks.
extern "C" __attribute__((noipa, used)) void edgecompress_mark(void) {
  __asm__ volatile("nop" ::: "memory");
}
extern "C" __attribute__((noipa, used)) void edgecompress_mark_invoke(void) {
  __asm__ volatile("nop\n\tnop" ::: "memory");
}

namespace {

using InvokeFunction = TfLiteStatus (*)(TfLiteContext*, TfLiteNode*);

// One wrapper per registered operator kind: marks, the kernel's own invoke, marks.
template <int K>
struct Marked {
  static InvokeFunction original;
  static TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
    edgecompress_mark();
    TfLiteStatus status = original(context, node);
    edgecompress_mark();
    return status;
  }
  static TFLMRegistration Wrap(TFLMRegistration registration) {
    original = registration.invoke;
    registration.invoke = Invoke;
    return registration;
  }
};
template <int K>
InvokeFunction Marked<K>::original = nullptr;

}  // namespace

// ops.h is generated for each firmware: EDGECOMPRESS_OP_COUNT and
// EDGECOMPRESS_ADD_OPS(resolver), which adds the model's operators through Marked<K>.
#include "ops.h"

// The model and the arena live in the board's large RAM (section .buffers, left out of
// the firmware's RAM figure: on a device the model sits in flash and the arena is sized
// to what the run reports).
__attribute__((section(".buffers"), aligned(16))) static uint8_t model_buffer[MODEL_CAPACITY];
__attribute__((section(".buffers"), aligned(16))) static uint8_t tensor_arena[ARENA_CAPACITY];
__attribute__((section(".buffers"), aligned(16))) static uint8_t record[RECORD_CAPACITY];

static void LogToStderr(const char* s) { fputs(s, stderr); }

static long ReadFile(const char* path, uint8_t* buffer, long capacity) {
  FILE* f = fopen(path, "rb");
  if (f == nullptr) return -1;
  long n = static_cast<long>(fread(buffer, 1, capacity, f));
  bool more = n == capacity && fgetc(f) != EOF;
  fclose(f);
  return more ? -2 : n;
}

int main(int argc, char** argv) {
  RegisterDebugLogCallback(LogToStderr);
  if (argc != 4) {
    fprintf(stderr, "usage: runner MODEL INPUTS OUTPUTS\n");
    return 2;
  }
  long model_size = ReadFile(argv[1], model_buffer, MODEL_CAPACITY);
  if (model_size < 0) {
    fprintf(stderr, model_size == -1 ? "cannot read the model %s\n"
                                     : "the model %s is larger than the buffer\n", argv[1]);
    return 2;
  }
  const tflite::Model* model = tflite::GetModel(model_buffer);
  static tflite::MicroMutableOpResolver<EDGECOMPRESS_OP_COUNT> resolver;
  EDGECOMPRESS_ADD_OPS(resolver);
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, ARENA_CAPACITY);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    fprintf(stderr, "edgecompress: AllocateTensors failed\n");
    return 3;
  }
  printf("arena %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));

  size_t record_size = 0;
  for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
    record_size += interpreter.input(i)->bytes;
  }
  if (record_size > RECORD_CAPACITY) {
    fprintf(stderr, "the inputs (%u bytes) are larger than the buffer\n",
            static_cast<unsigned>(record_size));
    return 2;
  }
  FILE* inputs = fopen(argv[2], "rb");
  FILE* outputs = fopen(argv[3], "wb");
  if (inputs == nullptr || outputs == nullptr) {
    fprintf(stderr, "cannot open the input or output file\n");
    return 2;
  }
  unsigned images = 0;
  while (fread(record, 1, record_size, inputs) == record_size) {
    size_t offset = 0;
    for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
      TfLiteTensor* tensor = interpreter.input(i);
      memcpy(tensor->data.raw, record + offset, tensor->bytes);
      offset += tensor->bytes;
    }
    edgecompress_mark_invoke();
    TfLiteStatus status = interpreter.Invoke();
    edgecompress_mark_invoke();
    if (status != kTfLiteOk) {
      fprintf(stderr, "edgecompress: Invoke failed on image %u\n", images);
      return 4;
    }
    for (size_t i = 0; i < interpreter.outputs_size(); ++i) {
      TfLiteTensor* tensor = interpreter.output(i);
      fwrite(tensor->data.raw, 1, tensor->bytes, outputs);
    }
    ++images;
  }
  fclose(inputs);
  fclose(outputs);
  printf("images %u\n", images);
  return 0;
}
