// procpool - making your own exception types come back from a worker as themselves.
//
// A task's exception is rebuilt in the parent as the same type with the same what() when it is one
// of: std::logic_error, std::invalid_argument, std::domain_error, std::length_error,
// std::out_of_range, std::runtime_error, std::range_error, std::overflow_error,
// std::underflow_error, std::system_error (with its error_code, for the generic, system, iostream
// and future categories), std::bad_alloc; or a type registered here. The match is on the exact
// type: a subclass of std::runtime_error that is not registered comes back as
// procpool::remote_error (which is a std::runtime_error too), carrying its demangled type name and
// what().
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <typeinfo>

namespace procpool {

namespace detail {
using exception_factory = std::exception_ptr (*)(const std::string& what);
auto register_exception_type(const std::type_info& type, exception_factory make) -> bool;
}  // namespace detail

/// Registers E so that a task throwing exactly E is rethrown in the parent as E(what). E must be
/// constructible from a std::string. Register at namespace scope (PROCPOOL_REGISTER_EXCEPTION) or
/// before procpool::init(), so that workers know the type too.
template <class E>
auto register_exception() -> bool {
  static_assert(std::is_constructible_v<E, std::string>,
                "procpool::register_exception<E>: E must be constructible from a std::string (its "
                "what() text)");
  return detail::register_exception_type(
      typeid(E), [](const std::string& what) { return std::make_exception_ptr(E(what)); });
}

}  // namespace procpool

#define PROCPOOL_DETAIL_CONCAT2(a, b) a##b
#define PROCPOOL_DETAIL_CONCAT(a, b) PROCPOOL_DETAIL_CONCAT2(a, b)

/// One line at namespace scope: `PROCPOOL_REGISTER_EXCEPTION(my::parse_error);`
#define PROCPOOL_REGISTER_EXCEPTION(...)                                                         \
  [[maybe_unused]] static const bool PROCPOOL_DETAIL_CONCAT(procpool_registered_, __COUNTER__) = \
      ::procpool::register_exception<__VA_ARGS__>()
