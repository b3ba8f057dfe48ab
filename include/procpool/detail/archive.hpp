// procpool - the binary archives that carry arguments and results: cereal's binary format, written
// straight into a byte buffer and read straight from a span, with every length checked against the
// bytes that are actually there.
//
// A result comes from a worker, which may be broken or hostile. cereal reads a container's length
// and resizes the container before reading its elements, so with its stock binary archive a 20-byte
// frame claiming a 4 GiB string makes the parent allocate 4 GiB. Here a length may not exceed the
// bytes left in the frame, so what decoding allocates stays within a small multiple of what the
// worker sent (the price: a container of more empty-sized elements than bytes left is rejected).
#pragma once

#include <cereal/cereal.hpp>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "procpool/detail/task_request.hpp"

namespace procpool::detail {

/// Appends cereal's binary encoding of what it is given to a byte_buffer.
class byte_output_archive
    : public cereal::OutputArchive<byte_output_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit byte_output_archive(byte_buffer& out)
      : cereal::OutputArchive<byte_output_archive, cereal::AllowEmptyClassElision>(this),
        out_(out) {}

  void save_bytes(const void* data, std::size_t size) {
    const auto* p = static_cast<const std::byte*>(data);
    out_.insert(out_.end(), p, p + size);
  }

 private:
  byte_buffer& out_;
};

/// Whether a decode may hand out views of its input (procpool::shared_bytes).
enum class view_policy { refuse, allow };

/// Reads cereal's binary encoding from a span without copying it; throws cereal::Exception when
/// the bytes run out or a length claims more than is left.
class byte_input_archive
    : public cereal::InputArchive<byte_input_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit byte_input_archive(std::span<const std::byte> in,
                              view_policy views = view_policy::refuse)
      : cereal::InputArchive<byte_input_archive, cereal::AllowEmptyClassElision>(this),
        next_(in.data()),
        end_(in.data() + in.size()),
        views_(views) {}

  void load_bytes(void* data, std::size_t size) {
    if (size > remaining()) {
      throw cereal::Exception("needs " + std::to_string(size) + " more bytes, only " +
                              std::to_string(remaining()) + " left");
    }
    if (size != 0) std::memcpy(data, next_, size);
    next_ += size;
  }

  void check_length(std::uint64_t length) const {
    if (length > remaining()) {
      throw cereal::Exception("a length of " + std::to_string(length) + " with only " +
                              std::to_string(remaining()) + " bytes left");
    }
  }

  [[nodiscard]] auto remaining() const -> std::size_t {
    return static_cast<std::size_t>(end_ - next_);
  }

  /// The next `size` bytes where they are, for a view (procpool::shared_bytes) instead of a copy.
  auto take_view(std::size_t size) -> std::span<const std::byte> {
    if (views_ != view_policy::allow) {
      throw cereal::Exception(
          "a procpool::shared_bytes outside a task's arguments (it would outlive its bytes)");
    }
    check_length(size);
    const std::span<const std::byte> view(next_, size);
    next_ += size;
    return view;
  }

 private:
  const std::byte* next_;
  const std::byte* end_;
  view_policy views_;
};

}  // namespace procpool::detail

namespace cereal {

template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(
    procpool::detail::byte_output_archive& ar, const T& t) {
  ar.save_bytes(std::addressof(t), sizeof t);
}
template <class T>
std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>> CEREAL_LOAD_FUNCTION_NAME(
    procpool::detail::byte_input_archive& ar, T& t) {
  ar.load_bytes(std::addressof(t), sizeof t);
}
// A byte other than 0 or 1 copied into a bool is undefined behaviour; refuse it instead.
inline void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar, bool& t) {
  unsigned char byte = 0;
  ar.load_bytes(&byte, 1);
  if (byte > 1) throw cereal::Exception("a bool encoded as " + std::to_string(byte));
  t = byte == 1;
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(procpool::detail::byte_output_archive& ar,
                               const NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar, NameValuePair<T>& t) {
  ar(t.value);
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(procpool::detail::byte_output_archive& ar, const SizeTag<T>& t) {
  ar(t.size);
}
// Every container length passes through here before the container is resized.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar, SizeTag<T>& t) {
  ar(t.size);
  ar.check_length(static_cast<std::uint64_t>(t.size));
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(procpool::detail::byte_output_archive& ar, const BinaryData<T>& bd) {
  ar.save_bytes(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar, BinaryData<T>& bd) {
  ar.load_bytes(bd.data, static_cast<std::size_t>(bd.size));
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(procpool::detail::byte_output_archive)
CEREAL_REGISTER_ARCHIVE(procpool::detail::byte_input_archive)
CEREAL_SETUP_ARCHIVE_TRAITS(procpool::detail::byte_input_archive,
                            procpool::detail::byte_output_archive)
