// procpool - shared_bytes: a task parameter that reads its bytes where they arrived in the worker.
#pragma once

#include <cstddef>
#include <ranges>
#include <span>
#include <string_view>
#include <type_traits>

namespace procpool {

/// A read-only view of bytes, for a task's parameter: `auto checksum(procpool::shared_bytes b)`.
///
/// In the caller it views the bytes you pass (a std::vector<std::byte>, a std::string, any
/// contiguous range of std::byte, char or unsigned char); submit copies them into the task before
/// it returns, so they need to stay valid only until then. In the worker it views the task's own
/// bytes where they arrived (for a task of 1 MiB or more, the pool's shared region, mapped
/// read-only): no copy and no allocation, where a std::vector<std::byte> parameter is copied once
/// more into fresh memory. Valid until the task returns; copy what you keep.
///
/// For arguments only: a task cannot return one, directly (a compile-time error) or inside another
/// type (the parent refuses it with serialization_error), since its bytes would be gone with the
/// worker's frame. Inside an argument (a std::vector<shared_bytes>, your struct's serialize())
/// it works.
class shared_bytes {
 public:
  shared_bytes() = default;
  // Not trivially copyable on purpose: a struct holding one is then never sent as its raw bytes
  // (an address that means nothing in another process); it needs its own serialize().
  shared_bytes(const shared_bytes& other) noexcept : bytes_(other.bytes_) {}
  auto operator=(const shared_bytes& other) noexcept -> shared_bytes& {
    bytes_ = other.bytes_;
    return *this;
  }
  ~shared_bytes() = default;
  shared_bytes(std::span<const std::byte> bytes) : bytes_(bytes) {}  // NOLINT: a view converts

  /// Text without its terminating NUL: shared_bytes("abc") has 3 bytes.
  shared_bytes(std::string_view text)  // NOLINT: a view converts
      : bytes_(reinterpret_cast<const std::byte*>(text.data()), text.size()) {}

  template <std::ranges::contiguous_range R>
  requires(std::ranges::sized_range<R> && !std::is_array_v<std::remove_cvref_t<R>> &&
           (std::is_same_v<std::ranges::range_value_t<R>, std::byte> ||
            std::is_same_v<std::ranges::range_value_t<R>, char> ||
            std::is_same_v<std::ranges::range_value_t<R>, unsigned char>))
      shared_bytes(const R& range)  // NOLINT: a view converts
      : bytes_(reinterpret_cast<const std::byte*>(std::ranges::data(range)),
               std::ranges::size(range)) {}

  [[nodiscard]] auto data() const -> const std::byte* { return bytes_.data(); }
  [[nodiscard]] auto size() const -> std::size_t { return bytes_.size(); }
  [[nodiscard]] auto empty() const -> bool { return bytes_.empty(); }
  [[nodiscard]] auto begin() const { return bytes_.begin(); }
  [[nodiscard]] auto end() const { return bytes_.end(); }
  [[nodiscard]] auto operator[](std::size_t i) const -> std::byte { return bytes_[i]; }
  [[nodiscard]] auto span() const -> std::span<const std::byte> { return bytes_; }
  operator std::span<const std::byte>() const { return bytes_; }  // NOLINT: a view converts

 private:
  std::span<const std::byte> bytes_;
};

}  // namespace procpool
