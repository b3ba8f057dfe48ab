// procpool - turning a function and its arguments into a task frame, and running it in a worker.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "procpool/detail/codec.hpp"
#include "procpool/detail/task_request.hpp"
#include "procpool/detail/wire.hpp"
#include "procpool/transfer.hpp"

namespace procpool::detail {

/// Runs in the worker: decodes the arguments, calls the function, encodes its result into `out`.
using thunk_fn = void (*)(std::uintptr_t function, std::span<const std::byte> args,
                          byte_buffer& out);

template <class F>
inline constexpr bool dependent_false_v = false;

template <class F>
struct function_traits;
template <class R, class... P>
struct function_traits<R (*)(P...)> {
  static_assert(!std::is_same_v<std::decay_t<R>, shared_bytes>,
                "procpool: a task cannot return shared_bytes (a view of the worker's task bytes, "
                "gone when it returns); return a std::vector<std::byte>");
  using result_type = std::decay_t<R>;
  using pointer = R (*)(P...);
  using stored_args = std::tuple<std::decay_t<P>...>;

  static void thunk(std::uintptr_t function, std::span<const std::byte> in, byte_buffer& out) {
    auto* fn = reinterpret_cast<pointer>(function);
    stored_args args;
    std::apply([&](auto&... a) { decode_arguments_from(in, a...); }, args);
    if constexpr (std::is_void_v<R>) {
      std::apply([&](auto&... a) { fn(static_cast<P&&>(a)...); }, args);
    } else {
      result_type r = std::apply([&](auto&... a) -> R { return fn(static_cast<P&&>(a)...); }, args);
      encode_into(out, r);
    }
  }
};
template <class R, class... P>
struct function_traits<R (*)(P...) noexcept> : function_traits<R (*)(P...)> {};

/// The function pointer a submitted callable stands for: itself, or a captureless lambda's
/// conversion. Anything else cannot be named in another process.
template <class F>
auto as_function_pointer(F f) {
  if constexpr (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) {
    return f;
  } else if constexpr (requires { +f; } && std::is_pointer_v<decltype(+f)>) {
    return +f;
  } else {
    static_assert(
        dependent_false_v<F>,
        "procpool: a task must be a function or a captureless lambda with explicit parameter "
        "types. Lambdas with captures (and generic lambdas) cannot be named in a worker "
        "process: pass the captured values as arguments instead.");
  }
}

template <class F>
using pointer_of_t = decltype(as_function_pointer(std::declval<F>()));

/// The result type of submitting F.
template <class F>
using submit_result_t = typename function_traits<pointer_of_t<F>>::result_type;

template <class T>
inline constexpr bool check_transferable() {
  static_assert(
      transferable<T>,
      "procpool: this argument or result type cannot cross the process boundary. Use "
      "arithmetic, trivially copyable, std::string/vector/map/optional/tuple... types, or give "
      "your type a cereal serialize(Archive&) member (see procpool/transfer.hpp). Raw "
      "pointers are never transferable.");
  return true;
}

template <class Tuple>
struct all_transferable;
template <class... T>
struct all_transferable<std::tuple<T...>> {
  static constexpr bool value = (check_transferable<T>() && ...);
};

/// Encodes `arg` as a `Param`: as it is when it already is one (no copy of a large buffer),
/// otherwise converted first (so a `const char*` becomes the `std::string` the function expects).
template <class Param, class Arg>
void encode_converted(byte_buffer& out, Arg&& arg) {
  if constexpr (std::is_same_v<std::decay_t<Arg>, Param>) {
    encode_into(out, arg);
  } else {
    const Param converted(std::forward<Arg>(arg));
    encode_into(out, converted);
  }
}

/// A task request for `f` run by `thunk`, its frame holding the header's room and the task prefix;
/// the caller appends the encoded arguments. `frame`'s capacity is reused, its contents discarded.
template <class F>
auto start_task_request(byte_buffer frame, F f, thunk_fn thunk) -> task_request {
  task_request req;
  req.frame = std::move(frame);
  req.frame.clear();
  req.function = reinterpret_cast<std::uintptr_t>(as_function_pointer(f));
  if constexpr (!std::is_pointer_v<F>) req.callable_type = &typeid(F);
  req.frame.resize(sizeof(frame_header) + sizeof(task_prefix));
  const task_prefix prefix{reinterpret_cast<std::uintptr_t>(thunk), req.function};
  std::memcpy(req.frame.data() + sizeof(frame_header), &prefix, sizeof prefix);
  return req;
}

/// Encodes a call of `f(args...)` into a task frame, converting each argument to the function's
/// parameter type first (so a `const char*` becomes the `std::string` the function expects).
/// `frame` is a buffer to encode into (its capacity is reused; its contents are discarded).
template <class F, class... Args>
auto make_task_request(byte_buffer frame, F f, Args&&... args) -> task_request {
  using traits = function_traits<pointer_of_t<F>>;
  using stored = typename traits::stored_args;
  static_assert(std::tuple_size_v<stored> == sizeof...(Args),
                "procpool: wrong number of arguments for the submitted function");
  static_assert(std::is_constructible_v<stored, Args&&...>,
                "procpool: the arguments cannot be converted to the submitted function's parameter "
                "types");
  static_assert(all_transferable<stored>::value &&
                check_transferable<typename traits::result_type>());
  task_request req = start_task_request(std::move(frame), f, &traits::thunk);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (encode_converted<std::tuple_element_t<I, stored>>(req.frame, std::forward<Args>(args)), ...);
  }
  (std::index_sequence_for<Args...>{});
  return req;
}

}  // namespace procpool::detail
