// An EMULATED `npu` device for tests: PyTorch's PrivateUse1 backend with every tensor in
// host memory. Nothing here talks to an Ascend NPU or to CANN, and nothing here ran on
// Ascend hardware. It gives tests a device that is not the CPU (its own dispatch key, its
// own allocator and memory statistics, device indices, streams and events) so the
// plugin's device plumbing can run; it cannot know the real device's numerics or timing.
//
// What it implements:
//   * a host-memory allocator for PrivateUse1 that counts allocated and peak bytes per
//     device, and a pinned host allocator (plain host memory, remembered as "pinned");
//   * a DeviceGuardImplInterface: a configurable number of devices (environment variable
//     VLLM_ASCEND_COMPAT_EMULATED_NPU_DEVICES, default 2), the current device and the
//     current stream per thread; streams and events are synchronous, so record, block,
//     query and synchronize complete at once;
//   * PrivateUse1 hooks (availability, device count, pinned memory, generators);
//   * the few aten kernels a backend must own: empty, empty_strided, copies between cpu
//     and npu, resize_, set_, the view ops that have per-backend kernels, and
//     _local_scalar_dense;
//   * a boxed fallback that runs every other aten op with the CPU kernels
//     (at::native::cpu_fallback). npu generators wrap a CPU generator, handed to the CPU
//     kernel in their place.
//
// Built at import time by torch_npu/_build.py with torch.utils.cpp_extension.load.

#include <torch/extension.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/GeneratorForPrivateuseone.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/_local_scalar_dense_native.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_as_complex_native.h>
#include <ATen/ops/view_as_real_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/csrc/Generator.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <tuple>
#include <unordered_set>

namespace npu_emulator {

using c10::DeviceIndex;
using c10::DeviceType;
using c10::StreamId;

constexpr DeviceType kNpu = DeviceType::PrivateUse1;
constexpr c10::DispatchKeySet npu_keys(c10::DispatchKey::PrivateUse1);
constexpr int kMaxDevices = 16;

// ---------------------------------------------------------------------------------------
// Devices: a fixed count, the current one per thread.

DeviceIndex read_device_count() {
  const char* text = std::getenv("VLLM_ASCEND_COMPAT_EMULATED_NPU_DEVICES");
  if (text == nullptr || *text == '\0') {
    return 2;
  }
  const long value = std::strtol(text, nullptr, 10);
  TORCH_CHECK(value >= 1 && value <= kMaxDevices,
              "VLLM_ASCEND_COMPAT_EMULATED_NPU_DEVICES must be between 1 and ", kMaxDevices,
              ", not '", text, "'");
  return static_cast<DeviceIndex>(value);
}

DeviceIndex device_count() {
  static const DeviceIndex count = read_device_count();
  return count;
}

thread_local DeviceIndex current_device_index = 0;

void check_index(DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < device_count(), "invalid npu device index ", int(index),
              ": the emulator has ", int(device_count()), " device(s)");
}

DeviceIndex current_device() { return current_device_index; }

void set_device(DeviceIndex index) {
  if (index < 0) {  // torch passes -1 for "leave the current device"
    return;
  }
  check_index(index);
  current_device_index = index;
}

// `index`, or the current device for -1; an error unless it names a device.
DeviceIndex checked(DeviceIndex index) {
  index = index < 0 ? current_device() : index;
  check_index(index);
  return index;
}

// ---------------------------------------------------------------------------------------
// Device memory: host memory, counted per device.

struct MemoryStats {
  std::mutex mutex;
  std::array<int64_t, kMaxDevices> allocated{};
  std::array<int64_t, kMaxDevices> peak{};
};

MemoryStats& stats() {
  static MemoryStats instance;
  return instance;
}

struct Block {
  void* ptr;
  size_t nbytes;
  DeviceIndex device;
};

void free_block(void* context) {
  auto* block = static_cast<Block*>(context);
  {
    std::lock_guard<std::mutex> lock(stats().mutex);
    stats().allocated[block->device] -= static_cast<int64_t>(block->nbytes);
  }
  c10::free_cpu(block->ptr);
  delete block;
}

// What each device reports as its memory (mem_get_info, device properties,
// torch.accelerator). The host has no such limit; allocations beyond it are not refused.
constexpr int64_t kTotalMemory = int64_t{16} << 30;

void reset_peak_memory_stats(DeviceIndex index);

// A c10::DeviceAllocator, as torch.accelerator's memory calls require (vLLM 0.33 empties the
// cache after loading the model). Nothing is cached and streams are synchronous, so
// emptyCache and recordStream have nothing to do.
struct NpuAllocator final : c10::DeviceAllocator {
  c10::DataPtr allocate(size_t nbytes) override {
    const DeviceIndex device = current_device();
    const c10::Device where(kNpu, device);
    if (nbytes == 0) {
      return {nullptr, nullptr, &c10::detail::deleteNothing, where};
    }
    void* ptr = c10::alloc_cpu(nbytes);
    {
      std::lock_guard<std::mutex> lock(stats().mutex);
      auto& allocated = stats().allocated[device];
      allocated += static_cast<int64_t>(nbytes);
      stats().peak[device] = std::max(stats().peak[device], allocated);
    }
    return {ptr, new Block{ptr, nbytes, device}, &free_block, where};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t /*mempool_id*/) override {}
  void recordStream(const c10::DataPtr& /*ptr*/, c10::Stream /*stream*/) override {}

  // The bytes of npu tensors, current and peak, as allocated, reserved, active and requested
  // alike (there is no cache, so the four agree).
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(DeviceIndex device) override {
    check_index(device);
    c10::CachingDeviceAllocator::DeviceStats out;
    std::lock_guard<std::mutex> lock(stats().mutex);
    for (auto* bytes : {&out.allocated_bytes, &out.reserved_bytes, &out.active_bytes,
                        &out.requested_bytes}) {
      auto& aggregate = (*bytes)[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
      aggregate.current = stats().allocated[device];
      aggregate.peak = stats().peak[device];
    }
    return out;
  }

  void resetAccumulatedStats(DeviceIndex /*device*/) override {}
  void resetPeakStats(DeviceIndex device) override { reset_peak_memory_stats(device); }

  std::pair<size_t, size_t> getMemoryInfo(DeviceIndex device) override {
    check_index(device);
    std::lock_guard<std::mutex> lock(stats().mutex);
    const int64_t free = std::max<int64_t>(kTotalMemory - stats().allocated[device], 0);
    return {static_cast<size_t>(free), static_cast<size_t>(kTotalMemory)};
  }
};

NpuAllocator device_allocator;

int64_t memory_allocated(DeviceIndex index) {
  index = checked(index);
  std::lock_guard<std::mutex> lock(stats().mutex);
  return stats().allocated[index];
}

int64_t max_memory_allocated(DeviceIndex index) {
  index = checked(index);
  std::lock_guard<std::mutex> lock(stats().mutex);
  return stats().peak[index];
}

void reset_peak_memory_stats(DeviceIndex index) {
  index = checked(index);
  std::lock_guard<std::mutex> lock(stats().mutex);
  stats().peak[index] = stats().allocated[index];
}

// Pinned host memory: ordinary host memory that the hooks report as pinned.

std::mutex pinned_mutex;
std::unordered_set<const void*> pinned_pointers;

void free_pinned(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned_pointers.erase(ptr);
  }
  c10::free_cpu(ptr);
}

struct PinnedAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes == 0) {
      return {nullptr, nullptr, &c10::detail::deleteNothing, c10::Device(DeviceType::CPU)};
    }
    void* ptr = c10::alloc_cpu(nbytes);
    {
      std::lock_guard<std::mutex> lock(pinned_mutex);
      pinned_pointers.insert(ptr);
    }
    return {ptr, ptr, &free_pinned, c10::Device(DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_pinned; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

PinnedAllocator pinned_allocator;

bool is_pinned(const void* data) {
  std::lock_guard<std::mutex> lock(pinned_mutex);
  return pinned_pointers.count(data) != 0;
}

// ---------------------------------------------------------------------------------------
// Streams and events. Work runs when it is issued, so every stream is always idle and
// every recorded event has completed; events keep the host time they were recorded at.

std::atomic<StreamId> next_stream_id{1};  // 0 is each device's default stream
thread_local std::array<StreamId, kMaxDevices> current_streams{};

c10::Stream make_stream(DeviceIndex index, StreamId id) {
  return c10::Stream(c10::Stream::UNSAFE, c10::Device(kNpu, index), id);
}

struct Event {
  bool timing = false;  // made with enable_timing=True
  std::chrono::steady_clock::time_point when;
};

double elapsed_ms(const void* start, const void* end) {
  const auto* a = static_cast<const Event*>(start);
  const auto* b = static_cast<const Event*>(end);
  TORCH_CHECK(a != nullptr && b != nullptr, "both events must be recorded before elapsed_time");
  TORCH_CHECK(a->timing && b->timing,
              "both events must be created with argument 'enable_timing=True'");
  return std::chrono::duration<double, std::milli>(b->when - a->when).count();
}

struct GuardImpl final : c10::impl::DeviceGuardImplInterface {
  DeviceType type() const override { return kNpu; }

  c10::Device exchangeDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kNpu, "expected an npu device, got ", d);
    const DeviceIndex old = current_device();
    set_device(d.index());
    return c10::Device(kNpu, old);
  }

  c10::Device getDevice() const override { return c10::Device(kNpu, current_device()); }

  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kNpu, "expected an npu device, got ", d);
    set_device(d.index());
  }

  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0 && d.index() < device_count()) {
      current_device_index = d.index();
    }
  }

  c10::Stream getStream(c10::Device d) const override {
    const DeviceIndex index = checked(d.index());
    return make_stream(index, current_streams[index]);
  }

  c10::Stream getDefaultStream(c10::Device d) const override {
    return make_stream(checked(d.index()), 0);
  }

  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override {
    return make_stream(checked(d.index()), next_stream_id++);
  }

  c10::Stream getStreamFromGlobalPool(c10::Device d, bool /*high_priority*/) const override {
    return make_stream(checked(d.index()), next_stream_id++);
  }

  c10::Stream exchangeStream(c10::Stream s) const override {
    const DeviceIndex index = checked(s.device_index());
    const StreamId old = current_streams[index];
    current_streams[index] = s.id();
    return make_stream(index, old);
  }

  DeviceIndex deviceCount() const noexcept override { return device_count(); }

  void destroyEvent(void* event, const DeviceIndex /*device_index*/) const noexcept override {
    delete static_cast<Event*>(event);
  }

  void record(void** event, const c10::Stream& stream, const DeviceIndex device_index,
              const c10::EventFlag flag) const override {
    TORCH_CHECK(device_index == -1 || device_index == stream.device_index(), "event device ",
                int(device_index), " does not match the recording stream's device ",
                int(stream.device_index()));
    if (*event == nullptr) {
      auto* created = new Event();
      created->timing = flag == c10::EventFlag::BACKEND_DEFAULT;
      *event = created;
    }
    static_cast<Event*>(*event)->when = std::chrono::steady_clock::now();
  }

  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {}

  bool queryEvent(void* /*event*/) const override { return true; }

  bool queryStream(const c10::Stream& /*stream*/) const override { return true; }

  void synchronizeStream(const c10::Stream& /*stream*/) const override {}

  void synchronizeEvent(void* /*event*/) const override {}

  void synchronizeDevice(const DeviceIndex /*device_index*/) const override {}

  void recordDataPtrOnStream(const c10::DataPtr& /*data_ptr*/,
                             const c10::Stream& /*stream*/) const override {}

  double elapsedTime(void* start, void* end, const DeviceIndex /*device_index*/) const override {
    return elapsed_ms(start, end);
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

// ---------------------------------------------------------------------------------------
// Generators: an npu generator owns a CPU generator; the fallback hands that one to the
// CPU kernels, so seeded random ops on npu draw exactly what the same seed draws on cpu.

struct NpuGenerator final : c10::GeneratorImpl {
  explicit NpuGenerator(DeviceIndex index)
      : c10::GeneratorImpl(c10::Device(kNpu, index), npu_keys),
        cpu(at::make_generator<at::CPUGeneratorImpl>()) {}

  void set_current_seed(uint64_t seed) override { cpu.set_current_seed(seed); }
  void set_offset(uint64_t offset) override { cpu.set_offset(offset); }
  uint64_t get_offset() const override { return cpu.get_offset(); }
  uint64_t current_seed() const override { return cpu.current_seed(); }
  uint64_t seed() override { return cpu.seed(); }
  void set_state(const c10::TensorImpl& state) override {
    cpu.unsafeGetGeneratorImpl()->set_state(state);
  }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override {
    return cpu.unsafeGetGeneratorImpl()->get_state();
  }
  static DeviceType device_type() { return kNpu; }

  at::Generator cpu;

 private:
  NpuGenerator* clone_impl() const override {
    auto* copy = new NpuGenerator(device().index());
    copy->cpu = cpu.clone();
    return copy;
  }
};

at::Generator new_generator(DeviceIndex index) {
  index = checked(index);
  return at::make_generator<NpuGenerator>(index);
}

const at::Generator& default_generator(DeviceIndex index) {
  static std::array<at::Generator, kMaxDevices> defaults;
  static std::once_flag once;
  std::call_once(once, [] {
    for (DeviceIndex i = 0; i < device_count(); ++i) {
      defaults[i] = new_generator(i);
      defaults[i].set_current_seed(c10::detail::getNonDeterministicRandom());
    }
  });
  index = checked(index);
  return defaults[index];
}

// ---------------------------------------------------------------------------------------
// Hooks: what ATen asks of an accelerator outside the dispatcher.

struct Hooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(DeviceIndex /*device_index*/) const override { return true; }
  DeviceIndex deviceCount() const override { return device_count(); }
  void setCurrentDevice(DeviceIndex device) const override { set_device(device); }
  DeviceIndex getCurrentDevice() const override { return current_device(); }
  DeviceIndex exchangeDevice(DeviceIndex device) const override {
    const DeviceIndex old = current_device();
    set_device(device);
    return old;
  }
  DeviceIndex maybeExchangeDevice(DeviceIndex device) const override {
    return exchangeDevice(device);
  }
  bool isPinnedPtr(const void* data) const override { return is_pinned(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return &pinned_allocator; }
  at::Device getDeviceFromPtr(void* /*data*/) const override {
    return at::Device(kNpu, current_device());
  }
  const at::Generator& getDefaultGenerator(DeviceIndex index) const override {
    return default_generator(index);
  }
  at::Generator getNewGenerator(DeviceIndex index) const override { return new_generator(index); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    at::native::resize_bytes_cpu(storage.unsafeGetStorageImpl(), newsize);
  }
};

const bool hooks_registered = [] {
  c10::SetAllocator(kNpu, &device_allocator);
  at::RegisterPrivateUse1HooksInterface(new Hooks());
  return true;
}();

// ---------------------------------------------------------------------------------------
// The aten kernels the backend owns.

void check_options(std::optional<c10::Device> device, std::optional<c10::Layout> layout,
                   std::optional<bool> pin_memory) {
  TORCH_CHECK(c10::device_or_default(device).type() == kNpu, "expected an npu device");
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided,
              "the npu emulator supports only strided tensors");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "only cpu tensors can be pinned");
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout,
                               std::optional<c10::Device> device, std::optional<bool> pin_memory,
                               std::optional<c10::MemoryFormat> memory_format) {
  check_options(device, layout, pin_memory);
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_generic(size, &device_allocator, npu_keys,
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride,
                         std::optional<c10::ScalarType> dtype, std::optional<c10::Layout> layout,
                         std::optional<c10::Device> device, std::optional<bool> pin_memory) {
  check_options(device, layout, pin_memory);
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_strided_generic(size, stride, &device_allocator, npu_keys,
                                           c10::dtype_or_default(dtype));
}

// A cpu tensor over the same host memory as `t` (an npu or a cpu tensor); it keeps the
// storage alive, so the emulated HCCL can hand it to gloo's asynchronous work.
at::Tensor host_alias(const at::Tensor& t) {
  if (t.device().type() != kNpu) {
    return t;
  }
  at::Tensor alias = at::from_blob(t.data_ptr(), t.sizes(), t.strides(),
                                   [storage = t.storage()](void*) {},
                                   t.options().device(c10::Device(DeviceType::CPU)));
  alias._set_conj(t.is_conj());  // lazy conjugation and negation travel with the alias
  alias._set_neg(t.is_neg());
  return alias;
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool /*non_blocking*/) {
  const auto is_host = [](const at::Tensor& t) {
    return t.device().type() == kNpu || t.device().type() == DeviceType::CPU;
  };
  TORCH_CHECK(is_host(self) && is_host(dst),
              "the npu emulator copies only between cpu and npu, not ", self.device(), " -> ",
              dst.device());
  if (dst.numel() == 0) {
    return dst;
  }
  at::Tensor out = host_alias(dst);
  out.copy_(host_alias(self));
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  at::native::resize_(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  return at::native::_local_scalar_dense_cpu(self);
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  const c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), memory_format);
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), 0, &device_allocator, true);
  return at::native::set_storage_cpu_(self, storage, 0, {0}, {});
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source) {
  return at::native::set_(self, source);
}

at::Tensor& set_storage_offset(at::Tensor& self, c10::Storage source, int64_t offset,
                               c10::IntArrayRef size, c10::IntArrayRef stride) {
  return at::native::set_storage_cpu_(self, source, offset, size, stride);
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) {
  return at::native::set_tensor_(self, source);
}

at::Tensor as_strided(const at::Tensor& self, c10::IntArrayRef size, c10::IntArrayRef stride,
                      std::optional<int64_t> storage_offset) {
  return at::native::as_strided_tensorimpl(self, size, stride, storage_offset);
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size,
                         c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size),
                                    C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor unfold(const at::Tensor& self, int64_t dimension, int64_t size, int64_t step) {
  return at::native::unfold(self, dimension, size, step);
}

at::Tensor view_as_real(const at::Tensor& self) { return at::native::view_as_real(self); }

at::Tensor view_as_complex(const at::Tensor& self) { return at::native::view_as_complex(self); }

bool is_generator_argument(const c10::Argument& argument) {
  const c10::TypePtr& type = argument.type();
  if (type->kind() == c10::TypeKind::GeneratorType) {
    return true;
  }
  return type->kind() == c10::TypeKind::OptionalType &&
         type->expectRef<c10::OptionalType>().getElementType()->kind() ==
             c10::TypeKind::GeneratorType;
}

// Every other op: the CPU kernel, on cpu copies of the arguments, with the results copied
// back to npu (at::native::cpu_fallback). A generator argument is an npu generator's CPU
// generator: the one given, else the current device's default.
void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& arguments = op.schema().arguments();
  const size_t first = stack->size() - arguments.size();
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (!is_generator_argument(arguments[i])) {
      continue;
    }
    c10::IValue& value = (*stack)[first + i];
    if (value.isNone()) {
      value = c10::IValue(default_generator(-1).get<NpuGenerator>()->cpu);
    } else if (value.isGenerator() && value.toGenerator().device().type() == kNpu) {
      value = c10::IValue(value.toGenerator().get<NpuGenerator>()->cpu);
    }
  }
  at::native::cpu_fallback(op, stack);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("_local_scalar_dense", local_scalar_dense);
  m.impl("resize_", resize_);
  m.impl("set_", set_empty);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Storage_storage_offset", set_storage_offset);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("as_strided", as_strided);
  m.impl("view", view);
  m.impl("_reshape_alias", reshape_alias);
  m.impl("unfold", unfold);
  m.impl("view_as_real", view_as_real);
  m.impl("view_as_complex", view_as_complex);
}

// Copies take lazily conjugated or negated tensors as they are (host_alias keeps the bits):
// resolving them first would clone, and a clone copies, back into _copy_from.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

// ---------------------------------------------------------------------------------------
// What torch_npu's Python side calls.

// (stream id, device index, device type): what torch.Stream takes to wrap a stream.
std::tuple<int64_t, int64_t, int64_t> stream_triple(DeviceIndex index, StreamId id) {
  return {id, index, static_cast<int64_t>(kNpu)};
}

std::tuple<int64_t, int64_t, int64_t> current_stream(DeviceIndex index) {
  index = checked(index);
  return stream_triple(index, current_streams[index]);
}

std::tuple<int64_t, int64_t, int64_t> default_stream(DeviceIndex index) {
  index = checked(index);
  return stream_triple(index, 0);
}

void set_stream(int64_t stream_id, DeviceIndex index) {
  check_index(index);
  current_streams[index] = stream_id;
}

}  // namespace npu_emulator

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace npu_emulator;
  m.doc() = "Emulated npu device (PrivateUse1, host memory); not an Ascend NPU.";
  m.def("device_count", [] { return int(device_count()); });
  m.def("current_device", [] { return int(current_device()); });
  m.def("set_device", [](int index) { set_device(static_cast<DeviceIndex>(index)); });
  m.def("total_memory", [] { return kTotalMemory; });
  m.def("memory_allocated", [](int index) { return memory_allocated(index); });
  m.def("max_memory_allocated", [](int index) { return max_memory_allocated(index); });
  m.def("reset_peak_memory_stats", [](int index) { reset_peak_memory_stats(index); });
  m.def("current_stream", [](int index) { return current_stream(index); });
  m.def("default_stream", [](int index) { return default_stream(index); });
  m.def("set_stream", [](int64_t id, int index) { set_stream(id, index); });
  m.def("host_alias", &host_alias);
  m.def("elapsed_time", [](std::uintptr_t start, std::uintptr_t end) {
    return elapsed_ms(reinterpret_cast<const void*>(start), reinterpret_cast<const void*>(end));
  });
  m.def("default_generator", [](int index) {
    return py::reinterpret_steal<py::object>(
        THPGenerator_initDefaultGenerator(default_generator(index)));
  });
}
