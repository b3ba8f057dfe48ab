// procpool - encoding values into byte buffers and decoding them back, with cereal.
#pragma once

#include <cstddef>
#include <istream>
#include <ostream>
#include <span>
#include <streambuf>
#include <string>
#include <vector>

#include "procpool/error.hpp"
#include "procpool/transfer.hpp"

namespace procpool::detail {

using byte_buffer = std::vector<std::byte>;

/// Appends everything written to it to a byte_buffer.
class buffer_sink : public std::streambuf {
 public:
  explicit buffer_sink(byte_buffer& out) : out_(out) {}

 protected:
  auto xsputn(const char* s, std::streamsize n) -> std::streamsize override {
    const auto* p = reinterpret_cast<const std::byte*>(s);
    out_.insert(out_.end(), p, p + n);
    return n;
  }
  auto overflow(int_type c) -> int_type override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) out_.push_back(static_cast<std::byte>(c));
    return traits_type::not_eof(c);
  }

 private:
  byte_buffer& out_;
};

/// Reads from a span of bytes without copying it.
class span_source : public std::streambuf {
 public:
  explicit span_source(std::span<const std::byte> in) {
    auto* p = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
    setg(p, p, p + in.size());
  }
  [[nodiscard]] auto remaining() const -> std::size_t {
    return static_cast<std::size_t>(egptr() - gptr());
  }
};

/// Appends the cereal encoding of each value to `out`.
template <class... T>
void encode_into(byte_buffer& out, const T&... values) {
  buffer_sink sink(out);
  std::ostream os(&sink);
  cereal::BinaryOutputArchive archive(os);
  if constexpr (sizeof...(T) > 0) archive(values...);
}

/// Decodes `values` from exactly the bytes in `in`; throws serialization_error when the bytes are
/// short, long, or otherwise do not describe the expected types.
template <class... T>
void decode_from(std::span<const std::byte> in, T&... values) {
  span_source source(in);
  std::istream is(&source);
  try {
    cereal::BinaryInputArchive archive(is);
    if constexpr (sizeof...(T) > 0) archive(values...);
  } catch (const std::exception& e) {
    throw serialization_error(std::string("procpool: could not decode a value: ") + e.what());
  }
  if (source.remaining() != 0) {
    throw serialization_error("procpool: could not decode a value: " +
                              std::to_string(source.remaining()) + " unexpected trailing bytes");
  }
}

}  // namespace procpool::detail
