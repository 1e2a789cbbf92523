// 64-byte aligned, zero-filled (touched) buffers and a spin barrier for per-step sync.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MM_CPU_RELAX() _mm_pause()
#else
#define MM_CPU_RELAX() ((void)0)
#endif

namespace mmengine {

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { reserve(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) { o.ptr_ = nullptr; o.size_ = 0; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) { std::free(ptr_); ptr_ = o.ptr_; size_ = o.size_; o.ptr_ = nullptr; o.size_ = 0; }
    return *this;
  }
  ~AlignedBuffer() { std::free(ptr_); }

  // Make room for n elements: reallocates (zeroed, pages touched) only to grow.
  void reserve(size_t n) {
    if (n <= size_ && (ptr_ || n == 0)) return;
    std::free(ptr_);
    ptr_ = nullptr;
    size_ = n;
    const size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
    if (bytes == 0) return;
    ptr_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!ptr_) throw std::bad_alloc();
    std::memset(static_cast<void*>(ptr_), 0, bytes);
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Sense-counting barrier for a fixed team; spins (cheap between cores sharing a cache) and
// yields the core after a while so that an oversubscribed machine still makes progress.
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  // Set the team size; only while no thread waits.
  void reset(int n) { n_ = n; count_.store(0); }
  void wait() {
    const int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.store(gen + 1, std::memory_order_release);
      return;
    }
    // a running partner arrives within microseconds; a descheduled one (busy machine) must
    // get the core back soon, so yield after ~10 us (a pause costs ~50 ns on recent x86)
    int spins = 0;
    while (gen_.load(std::memory_order_acquire) == gen) {
      ++spins;
      if (spins < 64) continue;
      if (spins < 256) MM_CPU_RELAX();
      else std::this_thread::yield();
    }
  }

 private:
  int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<int> gen_{0};
};

}  // namespace mmengine
