// procpool - the pool's lock discipline, checked by the compiler: Clang's thread-safety analysis
// (-Wthread-safety, the `lock-check` preset) proves that what is GUARDED_BY the pool's mutex is
// only touched with it held, and that functions marked REQUIRES are only called so. With other
// compilers the annotations are empty.
#pragma once

#include <mutex>

#if defined(__clang__)
#define PROCPOOL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PROCPOOL_THREAD_ANNOTATION(x)
#endif

#define PROCPOOL_CAPABILITY(x) PROCPOOL_THREAD_ANNOTATION(capability(x))
#define PROCPOOL_SCOPED_CAPABILITY PROCPOOL_THREAD_ANNOTATION(scoped_lockable)
#define PROCPOOL_GUARDED_BY(x) PROCPOOL_THREAD_ANNOTATION(guarded_by(x))
#define PROCPOOL_REQUIRES(...) PROCPOOL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define PROCPOOL_EXCLUDES(...) PROCPOOL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define PROCPOOL_ACQUIRE(...) PROCPOOL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define PROCPOOL_RELEASE(...) PROCPOOL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define PROCPOOL_ASSERT_CAPABILITY(x) PROCPOOL_THREAD_ANNOTATION(assert_capability(x))

namespace procpool::detail {

/// std::mutex, annotated as a capability.
class PROCPOOL_CAPABILITY("mutex") annotated_mutex {
 public:
  void lock() PROCPOOL_ACQUIRE() { m_.lock(); }
  void unlock() PROCPOOL_RELEASE() { m_.unlock(); }
  /// Tells the analysis the mutex is held where it cannot see it taken: in a handler that the
  /// pool's guarded() runs with the lock held.
  void assert_held() const PROCPOOL_ASSERT_CAPABILITY(this) {}

 private:
  std::mutex m_;
};

/// A lock on an annotated_mutex for a scope, which may be released early and taken again.
class PROCPOOL_SCOPED_CAPABILITY scoped_lock {
 public:
  explicit scoped_lock(annotated_mutex& m) PROCPOOL_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~scoped_lock() PROCPOOL_RELEASE() {
    if (held_) m_.unlock();
  }
  scoped_lock(const scoped_lock&) = delete;
  auto operator=(const scoped_lock&) -> scoped_lock& = delete;

  void unlock() PROCPOOL_RELEASE() {
    m_.unlock();
    held_ = false;
  }
  void lock() PROCPOOL_ACQUIRE() {
    m_.lock();
    held_ = true;
  }

 private:
  annotated_mutex& m_;
  bool held_ = true;
};

}  // namespace procpool::detail
