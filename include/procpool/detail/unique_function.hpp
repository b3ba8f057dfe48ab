// procpool - a move-only type-erased callable (C++23 has std::move_only_function; C++20 does not).
// asio::any_completion_handler would fit, but its move assignment recurses on Boost 1.81.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace procpool::detail {

template <class Signature>
class unique_function;

template <class R, class... Args>
class unique_function<R(Args...)> {
 public:
  unique_function() = default;
  template <class F>
  requires(!std::is_same_v<std::decay_t<F>, unique_function> &&
           std::is_invocable_r_v<R, F&&, Args...>)
      unique_function(
          F&& f)  // NOLINT(google-explicit-constructor): a function wrapper converts implicitly
      : callable_(std::make_unique<holder<std::decay_t<F>>>(std::forward<F>(f))) {}

  explicit operator bool() const noexcept { return callable_ != nullptr; }

  /// Invokes the callable; consumes it (each completion is called exactly once).
  auto operator()(Args... args) && -> R {
    auto c = std::move(callable_);
    return c->call(std::forward<Args>(args)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual auto call(Args... args) -> R = 0;
  };
  template <class F>
  struct holder final : base {
    explicit holder(F&& fn) : f(std::move(fn)) {}
    explicit holder(const F& fn) : f(fn) {}
    auto call(Args... args) -> R override { return std::move(f)(std::forward<Args>(args)...); }
    F f;
  };
  std::unique_ptr<base> callable_;
};

}  // namespace procpool::detail
