// procpool - the completion signature of an operation producing an R.
#pragma once

#include <exception>

namespace procpool::detail {

template <class R>
struct completion_signature {
  using type = void(std::exception_ptr, R);
};
template <>
struct completion_signature<void> {
  using type = void(std::exception_ptr);
};

/// `void(std::exception_ptr, R)`, or `void(std::exception_ptr)` when R is void.
template <class R>
using completion_signature_t = typename completion_signature<R>::type;

}  // namespace procpool::detail
