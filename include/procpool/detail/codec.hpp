// procpool - encoding values into byte buffers and decoding them back, with cereal.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "procpool/error.hpp"
#include "procpool/transfer.hpp"

namespace procpool::detail {

/// Appends the cereal encoding of each value to `out`.
template <class... T>
void encode_into(byte_buffer& out, const T&... values) {
  byte_output_archive archive(out);
  if constexpr (sizeof...(T) > 0) archive(values...);
}

/// Decodes `values` from exactly the bytes in `in` with `views` (see view_policy); throws
/// serialization_error when the bytes are short, long, claim more than they hold, or otherwise do
/// not describe the expected types.
template <class... T>
void decode_with(view_policy views, std::span<const std::byte> in, T&... values) {
  byte_input_archive archive(in, views);
  try {
    if constexpr (sizeof...(T) > 0) archive(values...);
  } catch (const std::exception& e) {
    throw serialization_error(std::string("procpool: could not decode a value: ") + e.what());
  }
  if (archive.remaining() != 0) {
    throw serialization_error("procpool: could not decode a value: " +
                              std::to_string(archive.remaining()) + " unexpected trailing bytes");
  }
}

/// Decodes values that own their bytes: a procpool::shared_bytes among them is refused (a result
/// would outlive the buffer it arrived in).
template <class... T>
void decode_from(std::span<const std::byte> in, T&... values) {
  decode_with(view_policy::refuse, in, values...);
}

/// Decodes a task's arguments in its worker: a procpool::shared_bytes views `in`, which outlives
/// the call.
template <class... T>
void decode_arguments_from(std::span<const std::byte> in, T&... values) {
  decode_with(view_policy::allow, in, values...);
}

}  // namespace procpool::detail
